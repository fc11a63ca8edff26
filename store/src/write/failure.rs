//! How the stages of a backup keep the error that stopped them.

use std::sync::Mutex;

use crate::error::Error;

/// Keeps the first error, except that a cause replaces a bare "stopped" (an `Error::Pipeline`
/// that a stage saw when another stage had already failed).
pub(crate) fn fail(failure: &Mutex<Option<Error>>, e: Error) {
    let mut f = failure.lock().unwrap();
    if f.is_none() || matches!((&*f, &e), (Some(Error::Pipeline(_)), e) if !matches!(e, Error::Pipeline(_))) {
        *f = Some(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_of_a_stop_is_kept_over_a_bare_stopped() {
        let io = || Error::NotFound("x".into());
        let f = Mutex::new(None);
        fail(&f, Error::Pipeline("its packer stopped".into()));
        fail(&f, io());
        fail(&f, Error::Pipeline("later".into()));
        assert!(matches!(&*f.lock().unwrap(), Some(Error::NotFound(_))));
        let g = Mutex::new(None);
        fail(&g, io());
        fail(&g, Error::Invalid("second".into()));
        assert!(
            matches!(&*g.lock().unwrap(), Some(Error::NotFound(_))),
            "the first cause stays"
        );
    }
}
