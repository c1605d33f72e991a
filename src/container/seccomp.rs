//! Compiles an OCI `LinuxSeccomp` into BPF programs (seccompiler) and installs them.
//!
//! # One profile, several filters
//!
//! A seccompiler filter has exactly two outcomes: one action for the syscalls it lists
//! (`match_action`) and one for everything else (`mismatch_action`). An OCI profile has a
//! default action plus any number of rule actions, e.g. Docker's default: ALLOW for the
//! allow list, ERRNO(ENOSYS) for `clone3`, ERRNO(EPERM) for the rest. We express it as a
//! stack of filters and rely on how the kernel combines stacked filters: every filter
//! runs and the result with the highest precedence wins, compared on the action alone
//! (KILL_PROCESS > KILL_THREAD > TRAP > ERRNO > TRACE > LOG > ALLOW; see seccomp(2),
//! "If multiple filters exist ..."). So, with `D` the default action:
//!
//! - one filter per rule action `A` other than ALLOW: `A` for the syscalls (with their
//!   argument conditions) that have a rule with action `A`, ALLOW otherwise;
//! - one *default* filter: ALLOW for every syscall that has a rule of any action, `D`
//!   otherwise.
//!
//! A syscall matching an `A` rule gets ALLOW from the default filter and `A` from its
//! own filter: `A` wins (nothing is weaker than ALLOW). A syscall matching no rule gets
//! `D` from the default filter and ALLOW from all the others: `D`. This is exact for
//! every profile whose rules do not overlap (no call matches rules of two different
//! actions), which holds for Docker's default profile. Where rules do overlap, the most
//! restrictive action wins; between two ERRNO (or TRACE) values the filter installed
//! last wins, i.e. the larger errno. libseccomp leaves such profiles undefined too.
//!
//! Rules whose action equals the default action are dropped, as runc drops them (they
//! change nothing). If the default action is ALLOW, no default filter is needed.
//!
//! # Names the target arch does not have
//!
//! Profiles list syscalls of every arch and kernel (`chown32`, `arm_fadvise64_64`, ...).
//! seccompiler's JSON frontend refuses a filter naming a syscall its table for the arch
//! lacks, so each name is first compiled alone into a throw-away filter; names that fail
//! are skipped, as libseccomp skips them. The answers are cached per arch and name.
//!
//! # What seccompiler cannot say
//!
//! seccompiler filters check one audit arch and kill the process (SECCOMP_RET_KILL_PROCESS)
//! for any other: on x86_64 the 32-bit (`int 0x80`) and x32 entry points that Docker's
//! profile opens through its `architectures` list are closed, so 32-bit binaries die on
//! their first syscall. Argument comparisons are 64-bit (libseccomp's semantics on 64-bit
//! arches). `flags` (LOG, SPEC_ALLOW, TSYNC, WAIT_KILLABLE_RECV) are ignored: ignoring them
//! never weakens the filter, and the filters are installed by a single-threaded process.
//! SCMP_ACT_NOTIFY needs a notify agent berth does not have, so it is refused.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Mutex, OnceLock, PoisonError};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{json, Value};

/// The OCI default for ERRNO (and, as in runc, TRACE) without an explicit `errnoRet`.
const EPERM: u32 = libc::EPERM as u32;
/// Syscalls have arguments 0 to 5.
const MAX_ARG_INDEX: usize = 5;

/// Why a seccomp profile could not be compiled or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// An action berth cannot carry out.
    #[error(
        "seccomp action {0} is not supported (berth has no seccomp notify agent): \
         use SCMP_ACT_ERRNO or SCMP_ACT_KILL_PROCESS in the profile instead"
    )]
    UnsupportedAction(LinuxSeccompAction),
    /// A rule compares an argument a syscall cannot have.
    #[error(
        "the seccomp rule for {syscalls} compares argument {index}, but syscalls have \
         arguments 0 to 5: fix the index in the profile"
    )]
    ArgumentIndex {
        /// The rule's syscall names, comma-separated.
        syscalls: String,
        /// The offending index.
        index: usize,
    },
    /// seccompiler has no syscall table for the arch berth runs on.
    #[error(
        "berth cannot compile seccomp filters for {0}: run on x86_64, aarch64 or riscv64, \
         or run the container without a seccomp profile"
    )]
    UnsupportedArch(String),
    /// seccompiler refused the filter (for example, a profile too large for one program).
    #[error(
        "compiling the seccomp profile to BPF for {arch:?} failed: shorten or fix the profile"
    )]
    Compile {
        /// The arch compiled for.
        arch: TargetArch,
        /// seccompiler's reason.
        #[source]
        source: seccompiler::Error,
    },
    /// The kernel refused a filter.
    #[error("installing seccomp filter {number} of {count} failed: {hint}")]
    Install {
        /// 1-based position of the filter in installation order.
        number: usize,
        /// How many filters the profile compiled to.
        count: usize,
        /// What to do about it.
        hint: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
}

/// A profile compiled to BPF: programs to install in order (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct SeccompFilters {
    programs: Vec<BpfProgram>,
}

impl SeccompFilters {
    /// The programs, in installation order. Empty for a profile that allows everything.
    pub fn programs(&self) -> &[BpfProgram] {
        &self.programs
    }

    /// Installs the filters on the calling thread; its future children inherit them.
    ///
    /// The caller must first set no_new_privs (`prctl(PR_SET_NO_NEW_PRIVS, 1)`, what OCI
    /// `process.noNewPrivileges` asks for) or hold CAP_SYS_ADMIN in its user namespace,
    /// as the kernel requires; this function does not set it, so a spec that keeps
    /// setuid binaries working (`noNewPrivileges: false`) can. Install right before
    /// exec, from a single thread: the filters bind only the calling thread. This does
    /// not allocate, so it may run in a child forked from a multithreaded process.
    pub fn install(&self) -> Result<(), SeccompError> {
        let count = self.programs.len();
        for (position, program) in self.programs.iter().enumerate() {
            let fprog = libc::sock_fprog {
                // seccompiler refuses programs of 4096 instructions or more, so this fits.
                len: program.len() as u16,
                // seccompiler's `sock_filter` is `repr(C)` with the kernel's layout, as is
                // libc's; the kernel only reads the program.
                filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
            };
            // SAFETY: `fprog` points to `len` valid instructions that outlive the call;
            // SECCOMP_SET_MODE_FILTER copies the program into the kernel.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &fprog as *const libc::sock_fprog,
                )
            };
            if rc != 0 {
                let source = io::Error::last_os_error();
                return Err(SeccompError::Install {
                    number: position + 1,
                    count,
                    hint: install_hint(&source),
                    source,
                });
            }
        }
        Ok(())
    }
}

fn install_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EACCES) => {
            "set no_new_privs (prctl PR_SET_NO_NEW_PRIVS) or hold CAP_SYS_ADMIN first"
        }
        Some(libc::EPERM) => {
            "an earlier filter of this profile denies seccomp(2): allow it in the profile"
        }
        Some(libc::EINVAL) => {
            "the kernel refused the BPF program: check that it supports seccomp filters \
             (CONFIG_SECCOMP_FILTER)"
        }
        Some(libc::ENOMEM) => "the filters exceed the kernel's limit: shorten the profile",
        _ => "check that the kernel supports seccomp filters (CONFIG_SECCOMP_FILTER)",
    }
}

/// Compiles `profile` for the arch berth runs on.
///
/// Compile in the parent, before forking the container's init: compiling allocates and
/// takes a process-wide lock (the syscall-name cache); only [`SeccompFilters::install`]
/// is safe in a child forked from a multithreaded process.
pub fn compile(profile: &LinuxSeccomp) -> Result<SeccompFilters, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::UnsupportedArch(std::env::consts::ARCH.to_string()))?;
    compile_for_arch(profile, arch)
}

/// Compiles `profile` for `arch`.
pub fn compile_for_arch(
    profile: &LinuxSeccomp,
    arch: TargetArch,
) -> Result<SeccompFilters, SeccompError> {
    let plans = plan(profile, arch)?;
    if plans.is_empty() {
        return Ok(SeccompFilters {
            programs: Vec::new(),
        });
    }
    // One JSON document, one filter per zero-padded key so that key order is install order.
    let document: serde_json::Map<String, Value> = plans
        .iter()
        .enumerate()
        .map(|(position, plan)| (format!("{position:04}"), plan.to_json()))
        .collect();
    let compiled =
        seccompiler::compile_from_json(Value::Object(document).to_string().as_bytes(), arch)
            .map_err(|source| SeccompError::Compile { arch, source })?;
    let mut compiled: Vec<(String, BpfProgram)> = compiled.into_iter().collect();
    compiled.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(SeccompFilters {
        programs: compiled.into_iter().map(|(_, program)| program).collect(),
    })
}

/// What the kernel does with a syscall; the order is the kernel's precedence, most
/// restrictive first, so the derived `Ord` is that precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    KillProcess,
    KillThread,
    Trap,
    Errno(u32),
    Trace(u32),
    Log,
    Allow,
}

impl Verdict {
    fn from_oci(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<Self, SeccompError> {
        Ok(match action {
            LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
                Verdict::KillThread
            }
            LinuxSeccompAction::ScmpActKillProcess => Verdict::KillProcess,
            LinuxSeccompAction::ScmpActTrap => Verdict::Trap,
            LinuxSeccompAction::ScmpActErrno => Verdict::Errno(errno_ret.unwrap_or(EPERM)),
            LinuxSeccompAction::ScmpActTrace => Verdict::Trace(errno_ret.unwrap_or(EPERM)),
            LinuxSeccompAction::ScmpActLog => Verdict::Log,
            LinuxSeccompAction::ScmpActAllow => Verdict::Allow,
            LinuxSeccompAction::ScmpActNotify => {
                return Err(SeccompError::UnsupportedAction(action))
            }
        })
    }

    /// seccompiler's JSON spelling.
    fn to_json(self) -> Value {
        match self {
            Verdict::KillProcess => json!("kill_process"),
            Verdict::KillThread => json!("kill_thread"),
            Verdict::Trap => json!("trap"),
            Verdict::Errno(errno) => json!({ "errno": errno }),
            Verdict::Trace(data) => json!({ "trace": data }),
            Verdict::Log => json!("log"),
            Verdict::Allow => json!("allow"),
        }
    }
}

/// Argument conditions that must all hold (seccompiler JSON conditions).
type Conjunction = Vec<Value>;

/// When a syscall matches, within one filter.
#[derive(Debug, Clone, PartialEq)]
enum Match {
    /// Whatever the arguments.
    Always,
    /// When any of the conjunctions holds.
    AnyOf(Vec<Conjunction>),
}

/// Syscall name -> when it matches.
type RuleSet = BTreeMap<String, Match>;

/// Adds "`name` matches when `when` holds" (`None`: always) to `rules`, OR-ing it with
/// what is there. seccompiler itself would turn "always" plus "when X" into "when X",
/// so the merge happens here.
fn add_rule(rules: &mut RuleSet, name: &str, when: Option<&[Conjunction]>) {
    let merged = match (rules.remove(name), when) {
        (Some(Match::Always), _) | (_, None) => Match::Always,
        (Some(Match::AnyOf(mut any)), Some(more)) => {
            any.extend(
                more.iter()
                    .filter(|c| !any.contains(c))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            Match::AnyOf(any)
        }
        (None, Some(more)) => Match::AnyOf(more.to_vec()),
    };
    rules.insert(name.to_string(), merged);
}

/// One filter to compile: `on_match` for `rules`, `otherwise` for everything else.
#[derive(Debug, PartialEq)]
struct FilterPlan {
    on_match: Verdict,
    otherwise: Verdict,
    rules: RuleSet,
}

impl FilterPlan {
    fn to_json(&self) -> Value {
        let filter: Vec<Value> = self
            .rules
            .iter()
            .flat_map(|(name, when)| match when {
                Match::Always => vec![json!({ "syscall": name })],
                Match::AnyOf(any) => any
                    .iter()
                    .map(|all| json!({ "syscall": name, "args": all }))
                    .collect(),
            })
            .collect();
        json!({
            "match_action": self.on_match.to_json(),
            "mismatch_action": self.otherwise.to_json(),
            "filter": filter,
        })
    }
}

/// The filters for `profile`, in installation order (see the module docs).
fn plan(profile: &LinuxSeccomp, arch: TargetArch) -> Result<Vec<FilterPlan>, SeccompError> {
    let default = Verdict::from_oci(profile.default_action(), profile.default_errno_ret())?;
    let mut by_action: BTreeMap<Verdict, RuleSet> = BTreeMap::new();
    for syscall in profile.syscalls().iter().flatten() {
        let action = Verdict::from_oci(syscall.action(), syscall.errno_ret())?;
        if action == default {
            continue;
        }
        let when = conditions(syscall)?;
        for name in syscall.names() {
            if syscall_known(name, arch) {
                add_rule(by_action.entry(action).or_default(), name, when.as_deref());
            }
        }
    }

    let mut plans: Vec<FilterPlan> = by_action
        .iter()
        .filter(|(action, _)| **action != Verdict::Allow)
        .map(|(action, rules)| FilterPlan {
            on_match: *action,
            otherwise: Verdict::Allow,
            rules: rules.clone(),
        })
        .collect();
    // Installed last: after it, seccomp(2) itself may be denied.
    if default != Verdict::Allow {
        let mut ruled = RuleSet::new();
        for (name, when) in by_action.values().flatten() {
            match when {
                Match::Always => add_rule(&mut ruled, name, None),
                Match::AnyOf(any) => add_rule(&mut ruled, name, Some(any)),
            }
        }
        plans.push(FilterPlan {
            on_match: Verdict::Allow,
            otherwise: default,
            rules: ruled,
        });
    }
    Ok(plans)
}

/// The rule's argument conditions as alternatives; `None` when it has none.
///
/// As in runc: conditions on distinct arguments must all hold; if an argument index
/// repeats, each condition is a rule of its own and any one suffices (the only way the
/// old profile format could say "arg0 is 0 or 8").
fn conditions(syscall: &LinuxSyscall) -> Result<Option<Vec<Conjunction>>, SeccompError> {
    let args = match syscall.args() {
        Some(args) if !args.is_empty() => args,
        _ => return Ok(None),
    };
    let mut all = Vec::with_capacity(args.len());
    for arg in args {
        if arg.index() > MAX_ARG_INDEX {
            return Err(SeccompError::ArgumentIndex {
                syscalls: syscall.names().join(","),
                index: arg.index(),
            });
        }
        let (op, value) = match arg.op() {
            LinuxSeccompOperator::ScmpCmpNe => (json!("ne"), arg.value()),
            LinuxSeccompOperator::ScmpCmpLt => (json!("lt"), arg.value()),
            LinuxSeccompOperator::ScmpCmpLe => (json!("le"), arg.value()),
            LinuxSeccompOperator::ScmpCmpEq => (json!("eq"), arg.value()),
            LinuxSeccompOperator::ScmpCmpGe => (json!("ge"), arg.value()),
            LinuxSeccompOperator::ScmpCmpGt => (json!("gt"), arg.value()),
            // OCI: `value` is the mask, `valueTwo` what the masked argument must equal.
            LinuxSeccompOperator::ScmpCmpMaskedEq => (
                json!({ "masked_eq": arg.value() }),
                arg.value_two().unwrap_or(0),
            ),
        };
        all.push(json!({ "index": arg.index(), "type": "qword", "op": op, "val": value }));
    }
    let repeats_an_index = args.iter().enumerate().any(|(i, arg)| {
        args[..i]
            .iter()
            .any(|earlier| earlier.index() == arg.index())
    });
    Ok(Some(if repeats_an_index {
        all.into_iter().map(|condition| vec![condition]).collect()
    } else {
        vec![all]
    }))
}

/// Whether seccompiler's syscall table for `arch` has `name`, by compiling a filter
/// that names only it. Cached: a profile names a few hundred syscalls.
fn syscall_known(name: &str, arch: TargetArch) -> bool {
    static KNOWN: OnceLock<Mutex<HashMap<(String, String), bool>>> = OnceLock::new();
    let key = (format!("{arch:?}"), name.to_string());
    let cache = KNOWN.get_or_init(Mutex::default);
    if let Some(&known) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return known;
    }
    let probe = json!({
        "probe": {
            "match_action": "log",
            "mismatch_action": "allow",
            "filter": [{ "syscall": name }],
        }
    });
    let known = seccompiler::compile_from_json(probe.to_string().as_bytes(), arch).is_ok();
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, known);
    known
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::caps::DEFAULT_CAPS;
    use crate::spec::seccomp::{default_profile, default_profile_for_arch};
    use oci_spec::runtime::LinuxSeccompArgBuilder;

    fn default_caps() -> Vec<String> {
        DEFAULT_CAPS.iter().map(|cap| cap.to_string()).collect()
    }

    fn syscall(
        names: &[&str],
        action: LinuxSeccompAction,
        errno: Option<u32>,
        args: &[(usize, LinuxSeccompOperator, u64)],
    ) -> LinuxSyscall {
        let mut rule = LinuxSyscall::default();
        rule.set_names(names.iter().map(|name| name.to_string()).collect())
            .set_action(action)
            .set_errno_ret(errno);
        if !args.is_empty() {
            let args = args
                .iter()
                .map(|&(index, op, value)| {
                    LinuxSeccompArgBuilder::default()
                        .index(index)
                        .op(op)
                        .value(value)
                        .build()
                        .unwrap()
                })
                .collect();
            rule.set_args(Some(args));
        }
        rule
    }

    fn profile(default: LinuxSeccompAction, syscalls: Vec<LinuxSyscall>) -> LinuxSeccomp {
        let mut profile = LinuxSeccomp::default();
        profile
            .set_default_action(default)
            .set_syscalls(Some(syscalls));
        profile
    }

    fn native() -> TargetArch {
        TargetArch::try_from(std::env::consts::ARCH).expect("tests run on a supported arch")
    }

    #[test]
    fn default_profile_compiles_for_x86_64_and_aarch64() {
        for (rust_arch, arch) in [
            ("x86_64", TargetArch::x86_64),
            ("aarch64", TargetArch::aarch64),
        ] {
            let filters =
                compile_for_arch(&default_profile_for_arch(rust_arch, &default_caps()), arch)
                    .unwrap_or_else(|err| panic!("{arch:?}: {err}"));
            // ERRNO(ENOSYS) for clone3, then the default filter.
            assert_eq!(filters.programs().len(), 2, "{arch:?}");
            assert!(filters
                .programs()
                .iter()
                .all(|p| !p.is_empty() && p.len() < 4096));

            let all_caps = crate::spec::caps::effective_caps(&[], &[], true).unwrap();
            let privileged =
                compile_for_arch(&default_profile_for_arch(rust_arch, &all_caps), arch)
                    .unwrap_or_else(|err| panic!("{arch:?} privileged: {err}"));
            assert_eq!(
                privileged.programs().len(),
                1,
                "{arch:?}: no clone3 ENOSYS rule"
            );
        }
    }

    #[test]
    fn unknown_syscall_names_are_detected_per_arch() {
        assert!(syscall_known("read", TargetArch::x86_64));
        assert!(syscall_known("read", TargetArch::aarch64));
        assert!(syscall_known("arch_prctl", TargetArch::x86_64));
        assert!(!syscall_known("arch_prctl", TargetArch::aarch64));
        assert!(!syscall_known("chown32", TargetArch::x86_64));
        assert!(!syscall_known("no_such_syscall", TargetArch::x86_64));
        // Cached answers agree with fresh ones.
        assert!(!syscall_known("no_such_syscall", TargetArch::x86_64));
        assert!(syscall_known("read", TargetArch::x86_64));
    }

    #[test]
    fn unknown_names_are_skipped_not_fatal() {
        let profile = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![syscall(
                &["read", "no_such_syscall", "chown32", "write"],
                LinuxSeccompAction::ScmpActAllow,
                None,
                &[],
            )],
        );
        let plans = plan(&profile, TargetArch::x86_64).unwrap();
        assert_eq!(plans.len(), 1);
        let names: Vec<&String> = plans[0].rules.keys().collect();
        assert_eq!(names, ["read", "write"]);
        compile_for_arch(&profile, TargetArch::x86_64).unwrap();
    }

    #[test]
    fn default_profile_plan_has_an_enosys_filter_then_the_default_filter() {
        let plans = plan(
            &default_profile_for_arch("x86_64", &default_caps()),
            TargetArch::x86_64,
        )
        .unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].on_match, Verdict::Errno(38));
        assert_eq!(plans[0].otherwise, Verdict::Allow);
        assert_eq!(plans[0].rules.keys().collect::<Vec<_>>(), ["clone3"]);

        let default = &plans[1];
        assert_eq!(
            (default.on_match, default.otherwise),
            (Verdict::Allow, Verdict::Errno(1))
        );
        assert_eq!(default.rules.get("clone3"), Some(&Match::Always));
        assert_eq!(default.rules.get("read"), Some(&Match::Always));
        for denied in ["mount", "unshare", "keyctl", "chown32"] {
            assert!(!default.rules.contains_key(denied), "{denied}");
        }
        match default.rules.get("personality") {
            Some(Match::AnyOf(any)) => assert_eq!(any.len(), 5),
            other => panic!("personality: {other:?}"),
        }
    }

    #[test]
    fn an_unconditional_rule_absorbs_conditional_ones_for_the_same_syscall() {
        use LinuxSeccompAction::ScmpActAllow as Allow;
        use LinuxSeccompOperator::ScmpCmpEq as Eq;
        let profile = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![
                syscall(&["personality"], Allow, None, &[(0, Eq, 8)]),
                syscall(&["personality"], Allow, None, &[]),
                syscall(&["personality"], Allow, None, &[(0, Eq, 0)]),
            ],
        );
        let plans = plan(&profile, native()).unwrap();
        assert_eq!(plans[0].rules.get("personality"), Some(&Match::Always));
    }

    #[test]
    fn conditions_and_across_arguments_and_or_within_one() {
        use LinuxSeccompOperator::{ScmpCmpEq as Eq, ScmpCmpGt as Gt};
        let distinct = syscall(
            &["x"],
            LinuxSeccompAction::ScmpActAllow,
            None,
            &[(0, Eq, 1), (1, Gt, 2)],
        );
        assert_eq!(
            conditions(&distinct).unwrap().unwrap().len(),
            1,
            "one conjunction of two"
        );
        let repeated = syscall(
            &["x"],
            LinuxSeccompAction::ScmpActAllow,
            None,
            &[(0, Eq, 1), (0, Eq, 2)],
        );
        let any = conditions(&repeated).unwrap().unwrap();
        assert_eq!(any.len(), 2, "two alternatives");
        assert!(any.iter().all(|all| all.len() == 1));
    }

    #[test]
    fn bad_profiles_are_refused_with_a_fix() {
        let notify = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![syscall(
                &["read"],
                LinuxSeccompAction::ScmpActNotify,
                None,
                &[],
            )],
        );
        let err = compile(&notify).unwrap_err();
        assert!(err.to_string().contains("SCMP_ACT_NOTIFY"), "{err}");

        let index = profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![syscall(
                &["read"],
                LinuxSeccompAction::ScmpActAllow,
                None,
                &[(6, LinuxSeccompOperator::ScmpCmpEq, 0)],
            )],
        );
        assert!(matches!(
            compile(&index),
            Err(SeccompError::ArgumentIndex { index: 6, .. })
        ));
    }

    #[test]
    fn rules_with_the_default_action_and_allow_all_profiles_compile_to_nothing() {
        let profile = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![syscall(
                &["read"],
                LinuxSeccompAction::ScmpActAllow,
                None,
                &[],
            )],
        );
        assert!(compile(&profile).unwrap().programs().is_empty());
    }

    /// Runs `checks` in a forked child under `filters` (after PR_SET_NO_NEW_PRIVS) and
    /// returns its exit code, or 128 + signal. The child must not allocate: the test
    /// harness is multithreaded.
    fn exit_code_under(filters: &SeccompFilters, checks: fn() -> i32) -> i32 {
        // SAFETY: the child only makes raw syscalls and `_exit`s; it never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: prctl with integer arguments only; `_exit` ends the child.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(100);
                }
                if filters.install().is_err() {
                    libc::_exit(101);
                }
                libc::_exit(checks());
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is a valid out-pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid: {}", io::Error::last_os_error());
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }
    }

    /// The errno of a syscall that returned -1, or 0 if it succeeded.
    fn errno_of(rc: libc::c_long) -> i32 {
        if rc == -1 {
            io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }

    /// Exit codes of [`default_profile_checks`], for the failure message.
    const DEFAULT_PROFILE_CHECKS: &[&str] = &[
        "all passed",
        "getpid failed",
        "unshare(CLONE_NEWUSER) was not EPERM",
        "keyctl was not EPERM",
        "mount was not EPERM",
        "personality(0xffffffff) failed",
        "personality(0x0) failed",
        "personality(READ_IMPLIES_EXEC) was not EPERM",
        "clone3 was not ENOSYS",
        "clone(CLONE_NEWUSER) was not EPERM",
        "fork (clone without namespace flags) failed",
        "socket(AF_VSOCK) was not EPERM",
        "socket(AF_UNIX) failed",
    ];

    fn default_profile_checks() -> i32 {
        // SAFETY: raw syscalls with integer or null arguments, each of which the filter
        // is expected to deny before the kernel looks at the pointers; a clone/fork child
        // `_exit`s at once.
        unsafe {
            if libc::syscall(libc::SYS_getpid) <= 0 {
                return 1;
            }
            if errno_of(libc::unshare(libc::CLONE_NEWUSER).into()) != libc::EPERM {
                return 2;
            }
            // KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3).
            if errno_of(libc::syscall(libc::SYS_keyctl, 0, -3, 0)) != libc::EPERM {
                return 3;
            }
            let none = std::ptr::null::<libc::c_char>();
            if errno_of(libc::mount(none, none, none, 0, std::ptr::null()).into()) != libc::EPERM {
                return 4;
            }
            if libc::personality(0xffff_ffff) == -1 {
                return 5;
            }
            if libc::personality(0) == -1 {
                return 6;
            }
            if errno_of(libc::personality(libc::READ_IMPLIES_EXEC as libc::c_ulong).into())
                != libc::EPERM
            {
                return 7;
            }
            let clone3 = libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize);
            if errno_of(clone3) != libc::ENOSYS {
                return 8;
            }
            let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
            let rc = libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize);
            if rc == 0 {
                libc::_exit(0);
            }
            if rc > 0 {
                libc::waitpid(rc as libc::pid_t, std::ptr::null_mut(), 0);
                return 9;
            }
            if errno_of(rc) != libc::EPERM {
                return 9;
            }
            let child = libc::fork();
            if child == 0 {
                libc::_exit(0);
            }
            let mut status = 0;
            if child < 0 || libc::waitpid(child, &mut status, 0) != child || status != 0 {
                return 10;
            }
            let vsock = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0);
            if errno_of(vsock.into()) != libc::EPERM {
                return 11;
            }
            let unix = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if unix < 0 {
                return 12;
            }
            libc::close(unix);
        }
        0
    }

    #[test]
    fn default_profile_denies_and_allows_as_docker_does() {
        let filters = compile(&default_profile(&default_caps())).unwrap();
        let code = exit_code_under(&filters, default_profile_checks);
        let what = DEFAULT_PROFILE_CHECKS
            .get(code as usize)
            .copied()
            .unwrap_or("install failed or the child was killed");
        assert_eq!(code, 0, "child exited {code}: {what}");
    }

    fn mixed_actions_checks() -> i32 {
        // SAFETY: raw syscalls with integer arguments only.
        unsafe {
            // getppid: EACCES when arg0 is 1 or 2 (repeated index: OR), allowed otherwise.
            if errno_of(libc::syscall(libc::SYS_getppid, 1)) != libc::EACCES {
                return 1;
            }
            if errno_of(libc::syscall(libc::SYS_getppid, 2)) != libc::EACCES {
                return 2;
            }
            if libc::syscall(libc::SYS_getppid, 3) <= 0 {
                return 3;
            }
            // getuid: EINVAL whatever the arguments.
            if errno_of(libc::syscall(libc::SYS_getuid)) != libc::EINVAL {
                return 4;
            }
            // getgid: no rule, the default (allow).
            if libc::syscall(libc::SYS_getgid) < 0 {
                return 5;
            }
        }
        0
    }

    #[test]
    fn several_actions_stack_as_documented() {
        use LinuxSeccompAction::ScmpActErrno as Errno;
        use LinuxSeccompOperator::ScmpCmpEq as Eq;
        let profile = profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![
                syscall(
                    &["getppid"],
                    Errno,
                    Some(libc::EACCES as u32),
                    &[(0, Eq, 1), (0, Eq, 2)],
                ),
                syscall(&["getuid"], Errno, Some(libc::EINVAL as u32), &[]),
            ],
        );
        let filters = compile(&profile).unwrap();
        assert_eq!(filters.programs().len(), 2);
        assert_eq!(exit_code_under(&filters, mixed_actions_checks), 0);
    }
}

/// Compiles `profile` for this machine, reusing a compiled copy from `cache_dir` when one
/// exists. Compiling Docker's profile costs milliseconds per run (seccompiler resolves every
/// name); the cache is keyed by the profile's exact JSON, the arch and berth's version.
pub fn compile_cached(
    profile: &LinuxSeccomp,
    cache_dir: &std::path::Path,
) -> Result<SeccompFilters, SeccompError> {
    use sha2::Digest;
    let Ok(json) = serde_json::to_vec(profile) else {
        return compile(profile);
    };
    let mut h = sha2::Sha256::new();
    h.update(&json);
    h.update(std::env::consts::ARCH.as_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    let path = cache_dir.join(format!("{}.bpf", hex::encode(h.finalize())));
    if let Some(filters) = std::fs::read(&path).ok().and_then(|b| decode(&b)) {
        return Ok(filters);
    }
    let filters = compile(profile)?;
    let _ = std::fs::create_dir_all(cache_dir);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, encode(&filters)).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
    Ok(filters)
}

/// Layout: per program a u32 instruction count, then 8 bytes per instruction (little endian).
fn encode(f: &SeccompFilters) -> Vec<u8> {
    let mut out = Vec::new();
    for p in &f.programs {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        for ins in p {
            out.extend_from_slice(&ins.code.to_le_bytes());
            out.push(ins.jt);
            out.push(ins.jf);
            out.extend_from_slice(&ins.k.to_le_bytes());
        }
    }
    out
}

fn decode(mut b: &[u8]) -> Option<SeccompFilters> {
    let mut programs = Vec::new();
    while !b.is_empty() {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        b = &b[4..];
        let body = b.get(..n.checked_mul(8)?)?;
        let prog: BpfProgram = body
            .chunks_exact(8)
            .map(|c| seccompiler::sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        if prog.is_empty() || prog.len() > 4096 {
            return None;
        }
        programs.push(prog);
        b = &b[n * 8..];
    }
    Some(SeccompFilters { programs })
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn cached_filters_equal_fresh_ones() {
        let dir = tempfile::tempdir().unwrap();
        let profile = crate::spec::seccomp::default_profile(
            &crate::spec::caps::DEFAULT_CAPS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        );
        let fresh = compile(&profile).unwrap();
        let first = compile_cached(&profile, dir.path()).unwrap();
        let second = compile_cached(&profile, dir.path()).unwrap();
        assert_eq!(encode(&fresh), encode(&first));
        assert_eq!(encode(&fresh), encode(&second));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A damaged cache file is ignored, not trusted.
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&file, b"\x05\0\0\0garbage").unwrap();
        assert_eq!(
            encode(&compile_cached(&profile, dir.path()).unwrap()),
            encode(&fresh)
        );
    }
}
