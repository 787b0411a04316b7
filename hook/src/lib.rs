//! dataplane-hook: see shared/SPEC.md.
