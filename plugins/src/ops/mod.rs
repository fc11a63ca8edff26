//! Operations around backups that are not databases: the schedule (cron entries and the
//! scheduled run) and maintenance mode.

pub mod maintenance;
pub mod schedule;
