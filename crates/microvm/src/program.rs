//! The guest program: real-mode x86 code assembled by hand into bytes.
//!
//! One copy of the code sits at [`CODE_ADDR`] in each VM; every vCPU runs it with its own data
//! segment (DS base = [`data_base`]`(vcpu)`), so each vCPU stores its reads in its own memory.
//! The VMM sets CS = 0, IP = [`CODE_ADDR`], SI = 0 (the read index), DI = 0 (the store cursor).
//!
//! ```text
//! loop:                                  per read k = SI
//!   mov  ax, si          ; 89 F0
//!   out  SEQ_PORT, ax    ; E7 ib         host: kvm_pio write SEQ_PORT val=k
//!   mov  eax, leaf       ; 66 B8 id
//!   cpuid                ; 0F A2         host: kvm_cpuid func=leaf (marker: a read follows)
//!   mov  ecx, 0x10       ; 66 B9 id      only with ReadInsn::Rdmsr (cpuid clobbered ecx)
//!   cmp  si, reads-1     ; 81 FE iw
//!   je   last            ; 74 cb
//!   rdtsc                ; 0F 31         THE READ (rip = loop_rdtsc); or rdmsr 0F 32
//!   out  TSC_PORT, eax   ; 66 E7 ib      host: kvm_pio write TSC_PORT val=low 32 bits of the read
//!   mov  [di], eax       ; 66 89 05
//!   mov  [di+4], edx     ; 66 89 55 04
//!   add  di, 8           ; 83 C7 08
//!   ; only with a WrmsrPlan:
//!   cmp  si, after_read  ; 81 FE iw
//!   jne  next            ; 75 cb
//!   mov  ecx, msr        ; 66 B9 id
//!   mov  eax, lo(value)  ; 66 B8 id
//!   mov  edx, hi(value)  ; 66 BA id
//!   wrmsr                ; 0F 30         host: kvm_msr write, kvm_write_tsc_offset
//! next:
//!   inc  si              ; 46
//!   jmp  loop            ; E9 cw
//! last:
//!   rdtsc                ; 0F 31         THE LAST READ (rip = last_rdtsc); or rdmsr 0F 32
//!   hlt                  ; F4            KVM_EXIT_HLT
//! ```
//!
//! With [`ReadInsn::Rdmsr`] every read is `rdmsr` of IA32_TSC instead: KVM's emulator
//! (arch/x86/kvm/emulate.c `em_rdmsr` → x86.c `emulator_get_msr_with_filter`) fires
//! `kvm_msr` ("msr_read 10 = 0x…") right after reading the TSC, so the host sees the value
//! itself and the read's window closes a few hundred cycles after it.
//!
//! The instruction right after each `rdtsc` is an exit to the VMM (`out` or `hlt`), so the
//! VMM reads the exact edx:eax of the read from the vCPU registers at that exit. `cpuid` and
//! `wrmsr` can never directly follow `rdtsc` with a meaningful operand: both take their input in
//! eax/edx, which `rdtsc` has just overwritten.

/// Guest-physical (and, CS = 0, linear) address of the code.
pub const CODE_ADDR: u64 = 0x1000;
/// Port announcing the read index before each read (16-bit `out`).
pub const SEQ_PORT: u16 = 0xe0;
/// Port written right after each read but the last, with the read's low 32 bits (32-bit `out`).
pub const TSC_PORT: u16 = 0xe4;
/// First data segment; vCPU n stores at `DATA_BASE + n * DATA_STRIDE`.
pub const DATA_BASE: u64 = 0x10000;
/// One real-mode segment per vCPU: 64 KiB.
pub const DATA_STRIDE: u64 = 0x10000;
/// Reads per vCPU: the stores (8 bytes each) must fit one 64 KiB segment, and SI compares
/// are 16-bit.
pub const MAX_READS: usize = 4096;
/// vCPUs per VM: code + data segments must stay below 1 MiB, the real-mode limit.
pub const MAX_VCPUS: usize = 8;

/// Guest-physical base of vCPU `vcpu`'s data segment.
pub fn data_base(vcpu: u32) -> u64 {
    DATA_BASE + u64::from(vcpu) * DATA_STRIDE
}

/// Size of a VM's guest memory for `vcpus` vCPUs.
pub fn mem_size(vcpus: usize) -> usize {
    (DATA_BASE + vcpus as u64 * DATA_STRIDE) as usize
}

/// The instruction that reads the TSC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadInsn {
    /// `rdtsc` (0f 31).
    #[default]
    Rdtsc,
    /// `rdmsr` with ecx = IA32_TSC (0f 32).
    Rdmsr,
}

impl ReadInsn {
    /// Opcode bytes, as the host's `kvm_emulate_insn` shows them.
    pub fn opcode(self) -> [u8; 2] {
        match self {
            ReadInsn::Rdtsc => [0x0f, 0x31],
            ReadInsn::Rdmsr => [0x0f, 0x32],
        }
    }
    /// Lower-case mnemonic, the first word of the guest trace line (`rdmsr seq=3 …`).
    pub fn mnemonic(self) -> &'static str {
        match self {
            ReadInsn::Rdtsc => "rdtsc",
            ReadInsn::Rdmsr => "rdmsr",
        }
    }
}

/// An assembled program and where its reads are.
#[derive(Debug, Clone)]
pub struct Program {
    /// Machine code, loaded at [`CODE_ADDR`].
    pub code: Vec<u8>,
    /// Guest rip of the read instruction used for reads 0 ..= reads-2.
    pub loop_rdtsc: u64,
    /// Guest rip of the read instruction used for the last read.
    pub last_rdtsc: u64,
    /// Which instruction reads.
    pub read: ReadInsn,
}

/// Code bytes with forward-jump patching; just enough of an assembler for the listing above.
struct Asm {
    code: Vec<u8>,
}

impl Asm {
    fn here(&self) -> usize {
        self.code.len()
    }
    fn emit(&mut self, bytes: &[u8]) {
        self.code.extend_from_slice(bytes);
    }
    /// Emits a short conditional jump with a placeholder; returns the displacement's index.
    fn jcc8(&mut self, opcode: u8) -> usize {
        self.emit(&[opcode, 0]);
        self.here() - 1
    }
    /// Points the rel8 at `at` to the current position.
    fn bind8(&mut self, at: usize) {
        let rel = self.here() - (at + 1);
        self.code[at] = u8::try_from(rel).expect("short jump within 127 bytes");
    }
}

/// Assembles the program for `reads` reads (1 ..= [`MAX_READS`]); `wrmsr` is
/// `(after_read, msr, value)`: write the MSR once, right after read `after_read` is stored.
pub fn assemble(
    reads: usize,
    marker_leaf: u32,
    wrmsr: Option<(usize, u32, u64)>,
    read: ReadInsn,
) -> Program {
    assert!((1..=MAX_READS).contains(&reads), "reads out of range");
    let last = (reads - 1) as u16;
    let mut a = Asm {
        code: Vec::with_capacity(64),
    };

    let top = a.here();
    a.emit(&[0x89, 0xf0]); // mov ax, si  (89 /r, modrm 11 110 000)
    a.emit(&[0xe7, SEQ_PORT as u8]); // out imm8, ax
    a.emit(&[0x66, 0xb8]); // mov eax, imm32
    a.emit(&marker_leaf.to_le_bytes());
    a.emit(&[0x0f, 0xa2]); // cpuid
    if read == ReadInsn::Rdmsr {
        a.emit(&[0x66, 0xb9]); // mov ecx, imm32
        a.emit(&0x10u32.to_le_bytes()); // IA32_TSC
    }
    a.emit(&[0x81, 0xfe]); // cmp si, imm16  (81 /7, modrm 11 111 110)
    a.emit(&last.to_le_bytes());
    let to_last = a.jcc8(0x74); // je last
    let loop_rdtsc = a.here();
    a.emit(&read.opcode()); // rdtsc / rdmsr
    a.emit(&[0x66, 0xe7, TSC_PORT as u8]); // out imm8, eax
    a.emit(&[0x66, 0x89, 0x05]); // mov [di], eax  (modrm 00 000 101)
    a.emit(&[0x66, 0x89, 0x55, 0x04]); // mov [di+4], edx  (modrm 01 010 101, disp8)
    a.emit(&[0x83, 0xc7, 0x08]); // add di, 8  (83 /0 ib, modrm 11 000 111)
    if let Some((after, msr, value)) = wrmsr {
        a.emit(&[0x81, 0xfe]); // cmp si, imm16
        a.emit(&(after as u16).to_le_bytes());
        let to_next = a.jcc8(0x75); // jne next
        a.emit(&[0x66, 0xb9]); // mov ecx, imm32
        a.emit(&msr.to_le_bytes());
        a.emit(&[0x66, 0xb8]); // mov eax, imm32
        a.emit(&(value as u32).to_le_bytes());
        a.emit(&[0x66, 0xba]); // mov edx, imm32
        a.emit(&((value >> 32) as u32).to_le_bytes());
        a.emit(&[0x0f, 0x30]); // wrmsr
        a.bind8(to_next);
    }
    a.emit(&[0x46]); // inc si
    let rel = top as i64 - (a.here() as i64 + 3);
    a.emit(&[0xe9]); // jmp rel16
    a.emit(&(rel as i16).to_le_bytes());
    a.bind8(to_last);
    let last_rdtsc = a.here();
    a.emit(&read.opcode()); // rdtsc / rdmsr
    a.emit(&[0xf4]); // hlt

    Program {
        code: a.code,
        loop_rdtsc: CODE_ADDR + loop_rdtsc as u64,
        last_rdtsc: CODE_ADDR + last_rdtsc as u64,
        read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_without_wrmsr() {
        let p = assemble(3, 0x4d56_0001, None, ReadInsn::Rdtsc);
        // rdtsc bytes sit where the rips say.
        let at = |rip: u64| (rip - CODE_ADDR) as usize;
        assert_eq!(
            &p.code[at(p.loop_rdtsc)..at(p.loop_rdtsc) + 2],
            &[0x0f, 0x31]
        );
        assert_eq!(&p.code[at(p.last_rdtsc)..], &[0x0f, 0x31, 0xf4]);
        // The loop jump lands on the first instruction: E9 at len-6, rel16 relative to the next insn.
        let j = at(p.last_rdtsc) - 3;
        assert_eq!(p.code[j], 0xe9);
        let rel = i16::from_le_bytes([p.code[j + 1], p.code[j + 2]]) as i64;
        assert_eq!(j as i64 + 3 + rel, 0);
        // je last jumps exactly to the last rdtsc.
        let je = p.code.iter().position(|&b| b == 0x74).unwrap();
        assert_eq!(je + 2 + p.code[je + 1] as usize, at(p.last_rdtsc));
        // cmp si, 2
        assert_eq!(&p.code[je - 4..je], &[0x81, 0xfe, 2, 0]);
    }

    #[test]
    fn wrmsr_block() {
        let p = assemble(5, 1, Some((2, 0x10, 0x1122_3344_5566_7788)), ReadInsn::Rdtsc);
        let w = p.code.windows(2).position(|w| w == [0x0f, 0x30]).unwrap();
        assert_eq!(&p.code[w - 6..w], &[0x66, 0xba, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(
            &p.code[w - 12..w - 6],
            &[0x66, 0xb8, 0x88, 0x77, 0x66, 0x55]
        );
        assert_eq!(&p.code[w - 18..w - 12], &[0x66, 0xb9, 0x10, 0, 0, 0]);
        // jne skips exactly the 20-byte block to `inc si`.
        assert_eq!(&p.code[w - 20..w - 18], &[0x75, 20]);
        assert_eq!(p.code[w + 2], 0x46);
    }

    #[test]
    fn rdmsr_reads() {
        let p = assemble(3, 1, Some((0, 0x3b, 5)), ReadInsn::Rdmsr);
        let at = |rip: u64| (rip - CODE_ADDR) as usize;
        assert_eq!(&p.code[at(p.loop_rdtsc)..at(p.loop_rdtsc) + 2], &[0x0f, 0x32]);
        assert_eq!(&p.code[at(p.last_rdtsc)..], &[0x0f, 0x32, 0xf4]);
        assert!(!p.code.windows(2).any(|w| w == [0x0f, 0x31]));
        // ecx = IA32_TSC right after cpuid, on both paths to a read.
        let c = p.code.windows(2).position(|w| w == [0x0f, 0xa2]).unwrap();
        assert_eq!(&p.code[c + 2..c + 8], &[0x66, 0xb9, 0x10, 0, 0, 0]);
        // je last still lands on the last read.
        let je = c + 8 + 4;
        assert_eq!(p.code[je], 0x74);
        assert_eq!(je + 2 + p.code[je + 1] as usize, at(p.last_rdtsc));
    }
}
