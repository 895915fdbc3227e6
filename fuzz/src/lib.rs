//! What the fuzz binaries share beyond the target functions (those live in
//! `tests/fuzz-targets`, so the workspace's tests can replay the corpora).

use std::sync::Once;

/// Bytes of the alternate signal stack.
const ALT_STACK: usize = 1 << 20;

/// Makes a stack overflow a reported finding. Without a sanitizer nothing
/// gives the process an alternate signal stack, so libFuzzer's SIGSEGV
/// handler cannot run when the stack is exhausted and the kernel kills the
/// process silently: no report, no saved input, and in fork mode no finding
/// at all. This gives the calling thread (libFuzzer runs every input on the
/// main thread) an alternate stack and re-installs libFuzzer's SIGSEGV and
/// SIGBUS handlers to run on it; it runs once, on the first input, after
/// libFuzzer has installed them.
pub fn report_stack_overflows() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let stack: &'static mut [u8] = Vec::leak(vec![0u8; ALT_STACK]);
        let ss = libc::stack_t {
            ss_sp: stack.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: ALT_STACK,
        };
        // SAFETY: the stack is leaked, so it outlives every signal; the
        // sigaction structs are plain data read and written by the kernel.
        unsafe {
            if libc::sigaltstack(&ss, std::ptr::null_mut()) != 0 {
                return;
            }
            for sig in [libc::SIGSEGV, libc::SIGBUS] {
                let mut act: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut act) == 0
                    && act.sa_sigaction != libc::SIG_DFL
                    && act.sa_sigaction != libc::SIG_IGN
                {
                    act.sa_flags |= libc::SA_ONSTACK;
                    libc::sigaction(sig, &act, std::ptr::null_mut());
                }
            }
        }
    });
}
