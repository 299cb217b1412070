//! Where to put a probe inside a Go function, decided by disassembly.
//!
//! A uprobe replaces one instruction with `int3`. When hit, the kernel
//! either emulates the original instruction (cheap) or single-steps a copy
//! of it out of line (on the project's VMs ~30x dearer). Go functions start
//! with the stack-growth check `cmp rsp,[r14+0x10]` (or `lea r12,[rsp-N];
//! cmp r12,[r14+0x10]` for bigger frames) followed by `jbe morestack`; the
//! `cmp` is single-stepped, the `jbe` emulated. So the entry probe goes on
//! the `jbe`: by then no argument register has been touched, and when the
//! branch is about to be taken the kernel side skips the hit (the function
//! restarts from its entry after `morestack`).

use iced_x86::{
    ConditionCode, Decoder, DecoderOptions, FlowControl, Formatter, Instruction,
    InstructionInfoFactory, IntelFormatter, Mnemonic, OpAccess, OpKind, Register,
};

/// A chosen probe location inside a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Virtual address of the probed instruction.
    pub addr: u64,
    /// The probe sits on the stack-check `jbe`.
    pub stackcheck: bool,
    /// Intel-syntax disassembly of the probed instruction.
    pub instruction: String,
    /// The kernel emulates the instruction instead of single-stepping it.
    pub emulated: bool,
}

/// Registers the kernel side reads at the entry probe (map type, map,
/// third argument, stack pointer, frame pointer, current g): an instruction
/// that writes one of them may not run before the probe.
const PROTECTED: [Register; 6] = [
    Register::RAX,
    Register::RBX,
    Register::RCX,
    Register::RSP,
    Register::RBP,
    Register::R14,
];

/// How far into a function the entry scan looks.
const ENTRY_SCAN_LIMIT: usize = 12;

fn format(instr: &Instruction) -> String {
    let mut f = IntelFormatter::new();
    let mut out = String::new();
    f.format(instr, &mut out);
    out
}

/// Whether Linux's x86 uprobe code emulates `instr` (raw bytes `raw`)
/// rather than single-stepping it.
///
/// From arch/x86/kernel/uprobes.c: `branch_setup_xol_ops` emulates
/// `jmp rel8/rel32`, `call rel32`, `jcc rel8/rel32` and the one-byte `nop`
/// (0x90, with prefixes), rejecting any branch with a 0x66 prefix;
/// `push_setup_xol_ops` emulates `push r64` (optionally with REX 0x41 only).
/// Kernels with the uprobe optimisation (6.18+) also turn a probe on a
/// 5-byte `nopl` into a call to a trampoline, which is cheaper still; it is
/// counted as emulated here. Everything else, `ret` included, is stepped.
pub fn kernel_emulates(instr: &Instruction, raw: &[u8]) -> bool {
    let prefixes: Vec<u8> = raw
        .iter()
        .copied()
        .take_while(|b| {
            matches!(
                b,
                0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0xf0 | 0x40
                    ..=0x4f
            )
        })
        .collect();
    let has_66 = prefixes.contains(&0x66);
    match instr.mnemonic() {
        Mnemonic::Nop => {
            // 0x90 with any prefixes, or the 5-byte `0f 1f /0` form.
            raw.get(prefixes.len()) == Some(&0x90)
                || (raw.len() == 5 && raw.get(prefixes.len()) == Some(&0x0f))
        }
        Mnemonic::Jmp | Mnemonic::Call => {
            !has_66
                && matches!(
                    instr.op0_kind(),
                    OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16
                )
        }
        Mnemonic::Push => {
            let rex_ok = matches!(prefixes.as_slice(), [] | [0x41]);
            rex_ok && instr.op0_kind() == OpKind::Register && raw.len() <= 2
        }
        _ if instr.flow_control() == FlowControl::ConditionalBranch
            && instr.condition_code() != ConditionCode::None
            && matches!(
                instr.op0_kind(),
                OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16
            ) =>
        {
            // jcc rel8/rel32; not jrcxz/loop (those have no condition code
            // in iced's sense and are not in the kernel's list).
            !has_66
                && !matches!(
                    instr.mnemonic(),
                    Mnemonic::Jrcxz
                        | Mnemonic::Jecxz
                        | Mnemonic::Jcxz
                        | Mnemonic::Loop
                        | Mnemonic::Loope
                        | Mnemonic::Loopne
                )
        }
        _ => false,
    }
}

fn writes_protected(info_factory: &mut InstructionInfoFactory, instr: &Instruction) -> bool {
    let info = info_factory.info(instr);
    info.used_registers().iter().any(|u| {
        matches!(
            u.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) && PROTECTED.contains(&u.register().full_register())
    })
}

/// `cmp <reg>, [r14+0x10]`: compare against `g.stackguard0`.
fn is_stackguard_cmp(instr: &Instruction) -> bool {
    instr.mnemonic() == Mnemonic::Cmp
        && instr.op_count() == 2
        && instr.op1_kind() == OpKind::Memory
        && instr.memory_base() == Register::R14
        && instr.memory_index() == Register::None
        && instr.memory_displacement64() == 0x10
}

/// Choose the entry probe for a function whose code starts at `ip`.
///
/// Preference: the stack-check `jbe` (emulated, `stackcheck`); else the
/// first kernel-emulated instruction reached without running anything that
/// writes a protected register or leaves straight-line code; else the
/// function's first instruction.
pub fn entry_site(code: &[u8], ip: u64) -> Option<Placement> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut factory = InstructionInfoFactory::new();
    let mut first: Option<Placement> = None;
    let mut fallback: Option<Placement> = None;
    let mut prev_guard_cmp = false;
    for _ in 0..ENTRY_SCAN_LIMIT {
        if !decoder.can_decode() {
            break;
        }
        let pos = decoder.position();
        let instr = decoder.decode();
        if instr.is_invalid() {
            break;
        }
        let raw = &code[pos..pos + instr.len()];
        let emulated = kernel_emulates(&instr, raw);
        let here = Placement {
            addr: instr.ip(),
            stackcheck: false,
            instruction: format(&instr),
            emulated,
        };
        if first.is_none() {
            first = Some(here.clone());
        }
        if prev_guard_cmp && instr.condition_code() == ConditionCode::be && emulated {
            return Some(Placement {
                stackcheck: true,
                ..here
            });
        }
        if emulated && fallback.is_none() {
            fallback = Some(here);
        }
        prev_guard_cmp = is_stackguard_cmp(&instr);
        if instr.flow_control() != FlowControl::Next || writes_protected(&mut factory, &instr) {
            break;
        }
    }
    fallback.or(first)
}

/// The function's first instruction, whatever it costs: what a probe on
/// the symbol would use. Only for measuring what placement saves
/// (`--placement function-start`).
pub fn function_start_site(code: &[u8], ip: u64) -> Option<Placement> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let instr = decoder.decode();
    if instr.is_invalid() {
        return None;
    }
    let raw = &code[..instr.len()];
    Some(Placement {
        addr: instr.ip(),
        stackcheck: false,
        instruction: format(&instr),
        emulated: kernel_emulates(&instr, raw),
    })
}

/// How many instructions past a call's return address an escalated exit
/// probe may move.
const EXIT_SCAN_LIMIT: usize = 24;

/// Registers the kernel side reads at an escalated exit (stack pointer,
/// frame pointer, current g): an instruction that writes one of them may
/// not run before the probe.
const EXIT_PROTECTED: [Register; 3] = [Register::RSP, Register::RBP, Register::R14];

/// Where an escalated call site's exit probe goes, given the code at the
/// call's return address `ip`: the return address itself when the kernel
/// emulates that instruction; else the first instruction after it that the
/// kernel emulates, provided everything before it runs straight through
/// (no branch, call or return), cannot synchronise with another goroutine
/// (no lock prefix, `xchg`, `cmpxchg`, `xadd` or fence: Go's atomic
/// stores and read-modify-writes are those on amd64, plain loads and
/// stores cannot release) and leaves RSP, RBP and R14 alone. An access
/// then seen "inside" until that probe was inside until its return as far
/// as any other goroutine can tell; else the return address, single-stepped.
pub fn call_exit_site(code: &[u8], ip: u64) -> Option<Placement> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut factory = InstructionInfoFactory::new();
    let mut first: Option<Placement> = None;
    for _ in 0..EXIT_SCAN_LIMIT {
        if !decoder.can_decode() {
            break;
        }
        let pos = decoder.position();
        let instr = decoder.decode();
        if instr.is_invalid() {
            break;
        }
        let raw = &code[pos..pos + instr.len()];
        let here = Placement {
            addr: instr.ip(),
            stackcheck: false,
            instruction: format(&instr),
            emulated: kernel_emulates(&instr, raw),
        };
        if here.emulated {
            return Some(here);
        }
        if first.is_none() {
            first = Some(here);
        }
        let synchronising = instr.has_lock_prefix()
            || matches!(
                instr.mnemonic(),
                Mnemonic::Xchg
                    | Mnemonic::Cmpxchg
                    | Mnemonic::Cmpxchg8b
                    | Mnemonic::Cmpxchg16b
                    | Mnemonic::Xadd
                    | Mnemonic::Mfence
                    | Mnemonic::Sfence
                    | Mnemonic::Lfence
            );
        let writes_protected = factory.info(&instr).used_registers().iter().any(|u| {
            matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            ) && EXIT_PROTECTED.contains(&u.register().full_register())
        });
        if instr.flow_control() != FlowControl::Next || synchronising || writes_protected {
            break;
        }
    }
    first
}

/// Direct `call rel32` instructions in the function's code, as (return
/// address, target).
pub fn direct_call_sites(code: &[u8], ip: u64) -> Vec<(u64, u64)> {
    Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
        .into_iter()
        .filter(|i| i.mnemonic() == Mnemonic::Call && i.op0_kind() == OpKind::NearBranch64)
        .map(|i| (i.next_ip(), i.near_branch_target()))
        .collect()
}

/// Every `ret` in the function's code.
pub fn ret_sites(code: &[u8], ip: u64) -> Vec<Placement> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        let pos = decoder.position();
        let instr = decoder.decode();
        if instr.is_invalid() {
            continue;
        }
        if instr.mnemonic() == Mnemonic::Ret {
            out.push(Placement {
                addr: instr.ip(),
                stackcheck: false,
                instruction: format(&instr),
                emulated: kernel_emulates(&instr, &code[pos..pos + instr.len()]),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cmp rsp,[r14+0x10]; jbe +0x2f5; sub rsp,0x38; ret` (Go 1.19 shape).
    const GO119_PROLOGUE: &[u8] = &[
        0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xf1, 0x02, 0x00, 0x00, 0x48, 0x83, 0xec, 0x38, 0xc3,
    ];

    #[test]
    fn entry_goes_on_stackcheck_jbe() {
        let p = entry_site(GO119_PROLOGUE, 0x40fce0).unwrap();
        assert_eq!(p.addr, 0x40fce4);
        assert!(p.stackcheck);
        assert!(p.emulated);
        assert!(p.instruction.starts_with("jbe"), "{}", p.instruction);
    }

    #[test]
    fn big_frame_lea_r12_form_is_recognised() {
        // lea r12,[rsp-0x100]; cmp r12,[r14+0x10]; jbe rel8
        let code = [
            0x4c, 0x8d, 0xa4, 0x24, 0x00, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x10,
            0xc3,
        ];
        let p = entry_site(&code, 0x1000).unwrap();
        assert_eq!(p.addr, 0x100c);
        assert!(p.stackcheck && p.emulated);
    }

    #[test]
    fn nosplit_function_uses_first_emulated_before_clobber() {
        // mov rdx,[rax+0x40]; push rbp; mov rbp,rsp; ret
        let code = [0x48, 0x8b, 0x50, 0x40, 0x55, 0x48, 0x89, 0xe5, 0xc3];
        let p = entry_site(&code, 0x2000).unwrap();
        assert_eq!(p.addr, 0x2004);
        assert!(p.emulated && !p.stackcheck);
        assert_eq!(p.instruction, "push rbp");
    }

    #[test]
    fn clobber_before_emulated_falls_back_to_entry() {
        // mov rax,rbx; push rbp
        let code = [0x48, 0x89, 0xd8, 0x55];
        let p = entry_site(&code, 0x3000).unwrap();
        assert_eq!(p.addr, 0x3000);
        assert!(!p.emulated && !p.stackcheck);
    }

    #[test]
    fn jbe_without_guard_cmp_is_not_a_stackcheck() {
        // cmp rax,rbx; jbe +0
        let code = [0x48, 0x39, 0xd8, 0x76, 0x00];
        let p = entry_site(&code, 0x3000).unwrap();
        assert_eq!(p.addr, 0x3003);
        assert!(!p.stackcheck && p.emulated);
    }

    #[test]
    fn direct_call_targets_are_absolute() {
        // call +0 (to 0x1005); call rax; call -0x10
        let code = [0xe8, 0, 0, 0, 0, 0xff, 0xd0, 0xe8, 0xf0, 0xff, 0xff, 0xff];
        assert_eq!(
            direct_call_sites(&code, 0x1000),
            vec![(0x1005, 0x1005), (0x100c, 0xffc)]
        );
    }

    #[test]
    fn finds_every_ret_and_marks_it_stepped() {
        let code = [0x31, 0xc0, 0xc3, 0x90, 0xc3, 0xcc, 0xcc];
        let r = ret_sites(&code, 0x10);
        assert_eq!(
            r.iter().map(|p| p.addr).collect::<Vec<_>>(),
            vec![0x12, 0x14]
        );
        assert!(r.iter().all(|p| !p.emulated && p.instruction == "ret"));
    }

    #[test]
    fn call_exit_moves_to_the_next_emulated_instruction() {
        // mov rcx,[rax+18h]; inc rcx; call rel32 (refresh's shape).
        let code = [
            0x48, 0x8b, 0x48, 0x18, 0x48, 0xff, 0xc1, 0xe8, 0x00, 0x00, 0x00, 0x00,
        ];
        let p = call_exit_site(&code, 0x1000).unwrap();
        assert_eq!(p.addr, 0x1007);
        assert!(p.emulated && p.instruction.starts_with("call"));
        // An emulated instruction at the return address stays there.
        let p = call_exit_site(&[0x90, 0xc3], 0x2000).unwrap();
        assert_eq!((p.addr, p.emulated), (0x2000, true));
    }

    #[test]
    fn call_exit_stays_before_anything_that_could_synchronise() {
        // mov rcx,[rax+18h]; xchg [rdx],ecx (an atomic store); call rel32.
        let code = [0x48, 0x8b, 0x48, 0x18, 0x87, 0x0a, 0xe8, 0, 0, 0, 0];
        let p = call_exit_site(&code, 0x1000).unwrap();
        assert_eq!((p.addr, p.emulated), (0x1000, false));
        // mov; call [rsi] (indirect, stepped): no emulated one reachable.
        let code = [0x48, 0x8b, 0x48, 0x18, 0xff, 0x16, 0xe8, 0, 0, 0, 0];
        let p = call_exit_site(&code, 0x1000).unwrap();
        assert_eq!((p.addr, p.emulated), (0x1000, false));
        // mov; pop rbp; call: the frame pointer changes first.
        let code = [0x48, 0x8b, 0x48, 0x18, 0x5d, 0xe8, 0, 0, 0, 0];
        let p = call_exit_site(&code, 0x1000).unwrap();
        assert_eq!(p.addr, 0x1000);
    }

    #[test]
    fn emulation_classification_matches_kernel_list() {
        let decode = |b: &[u8]| {
            let mut d = Decoder::with_ip(64, b, 0, DecoderOptions::NONE);
            kernel_emulates(&d.decode(), b)
        };
        assert!(decode(&[0x76, 0x05])); // jbe rel8
        assert!(decode(&[0x0f, 0x86, 0, 0, 0, 0])); // jbe rel32
        assert!(decode(&[0xe8, 0, 0, 0, 0])); // call rel32
        assert!(decode(&[0xeb, 0])); // jmp rel8
        assert!(decode(&[0x55])); // push rbp
        assert!(decode(&[0x41, 0x56])); // push r14
        assert!(decode(&[0x90])); // nop
        assert!(decode(&[0x0f, 0x1f, 0x44, 0x00, 0x00])); // nopl 5 bytes
        assert!(!decode(&[0x0f, 0x1f, 0x40, 0x00])); // nopl 4 bytes
        assert!(!decode(&[0x49, 0x3b, 0x66, 0x10])); // cmp rsp,[r14+0x10]
        assert!(!decode(&[0xc3])); // ret
        assert!(!decode(&[0xff, 0xd0])); // call rax
        assert!(!decode(&[0xe3, 0x00])); // jrcxz
        assert!(!decode(&[0x48, 0x89, 0xe5])); // mov rbp,rsp
    }
}
