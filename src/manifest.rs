//! RON team manifests → validated specs.
