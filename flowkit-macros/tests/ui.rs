//! Compile-time behaviour of `#[task]` and `#[flow]`: `ui/pass` holds the forms the
//! attributes accept (each compiles and runs), `ui/fail` one mistake per file with the error
//! the user sees (checked in as `.stderr`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
