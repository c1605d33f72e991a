//! Compiles an OCI `LinuxSeccomp` into a BPF program (seccompiler) and installs it.
