//! Starting a monitor: a grandchild of the berth command, in a session of its own, so that
//! the command can exit (and the terminal go) while the sandbox runs.

use std::io;

/// Runs `work` in a grandchild detached from this process (its own session, reparented to
/// init once the intermediate child has exited) and returns when that child is gone. `work`
/// should exec or exit; if it returns (or panics), the grandchild exits with status 125.
/// The caller must be single-threaded.
pub fn spawn_detached(work: impl FnOnce()) -> io::Result<()> {
    // SAFETY: fork in a single-threaded process; the child runs only what follows.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: setsid, fork and _exit in the single-threaded child; the grandchild runs
            // `work`, which never returns.
            unsafe {
                libc::setsid();
                match libc::fork() {
                    0 => {
                        // A panic must not unwind into the caller's code in this copy.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                        libc::_exit(125)
                    }
                    -1 => libc::_exit(1),
                    _ => libc::_exit(0),
                }
            }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waitpid writes the status into a local integer.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else {
                Err(io::Error::other("the monitor's launcher failed to fork"))
            }
        }
    }
}

/// Makes `fd` survive (`on == false`) or not survive an exec.
pub fn set_cloexec(fd: std::os::fd::RawFd, on: bool) {
    super::serve::set_cloexec(fd, on)
}
