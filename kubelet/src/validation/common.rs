//! Checks of single values that pod, container and volume validation share (upstream's
//! `ValidatePathNoBacksteps` and `ValidateNonnegativeQuantity` in
//! `pkg/apis/core/validation`).

use super::{Errors, FieldError};

/// True when a path has a `..` element (upstream `ValidatePathNoBacksteps`).
pub(crate) fn has_backsteps(path: &str) -> bool {
    path.split(['/', '\\']).any(|p| p == "..")
}

/// Checks a quantity parses and is not negative.
pub(crate) fn quantity(field: &str, text: &str, errs: &mut Errors) {
    match super::quantity::Quantity::parse(text) {
        Err(_) => errs.push(FieldError::invalid(
            field,
            text,
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        )),
        Ok(q) if q.is_negative() => errs.push(FieldError::invalid(field, text, "must be greater than or equal to 0")),
        Ok(_) => {}
    }
}
