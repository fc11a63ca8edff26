//! Operations around backups that are not databases: the schedule (cron entries and the
//! scheduled run), maintenance mode and the platform's health.

pub mod health;
pub mod maintenance;
pub mod schedule;
