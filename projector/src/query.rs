//! Reading the projection back.
