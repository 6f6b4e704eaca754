//! A fake substrate for unit tests.
