//! `uniffi-bindgen`, built from the same uniffi version as the library, so
//! the generated Kotlin, Swift and Python always match its scaffolding.

fn main() {
    uniffi::uniffi_bindgen_main()
}
