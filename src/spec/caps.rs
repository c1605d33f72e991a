//! Capability sets: Docker's default, --cap-add/--cap-drop arithmetic.
