/*
 * berth's tiny PVH test guest: a few hundred bytes of 32-bit code that prove
 * the VMM's boot path without a Linux kernel.
 *
 * Entered through the PVH boot protocol (XEN_ELFNOTE_PHYS32_ENTRY): 32-bit
 * protected mode, paging off, %ebx = the hvm_start_info the VMM wrote. It
 *   - prints "berth-tiny-guest: hello" on COM1 (0x3f8, polling the LSR),
 *   - echoes the command line from hvm_start_info,
 *   - prints the RAM the memory map describes (MiB, rounded up) and the
 *     number of enabled processors in the MP table,
 *   - with a boot module (berth's --initrd), prints its size and the start
 *     of its first line (at most 32 bytes),
 *   - signals boot-complete to the VMM's boot timer: the byte 123 written to
 *     guest-physical 0xd0000000 (berth's boot-timer MMIO page; other VMMs
 *     ignore the write),
 * and then, by variant (assemble with --defsym VARIANT=N):
 *   0 (reset):  resets through the i8042 (outb 0xfe, 0x64); where nothing
 *               answers that port (QEMU microvm), it triple-faults instead,
 *               which QEMU -no-reboot also turns into an exit;
 *   1 (halt):   halts forever with interrupts off;
 *   3 (long):   no PVH note: the ELF entry is 64-bit code, entered through
 *               the 64-bit boot protocol (long mode on the VMM's identity
 *               page tables); it prints "berth-tiny-guest: hello from long
 *               mode" and resets;
 *   2 (triple): triple-faults at once (an empty IDT, then ud2: #UD finds no
 *               gate, nor does the #GP and #DF that follow; ud2 rather than
 *               int3 because PVM's emulator cannot deliver software interrupts).
 */

.ifndef VARIANT
.set VARIANT, 0
.endif

.set COM1, 0x3f8
.set COM1_LSR, 0x3fd
.set LSR_THRE, 0x20
.set I8042_CMD, 0x64
.set I8042_RESET, 0xfe
.set BOOT_TIMER, 0xd0000000
.set BOOT_TIMER_MAGIC, 123
.set START_INFO_MAGIC, 0x336ec578
.set MP_FLOAT_SIG, 0x5f504d5f   /* "_MP_" */

    .text
    .globl kernel_start
.if VARIANT == 3
/* The 64-bit entry: %rsi = the zero page, which this guest ignores. */
    .code64
kernel_start:
    lea msg_long(%rip), %rsi
1:  lodsb
    test %al, %al
    jz 3f
    mov %al, %bl
    mov $COM1_LSR, %dx
2:  inb %dx, %al
    test $LSR_THRE, %al
    jz 2b
    mov %bl, %al
    mov $COM1, %dx
    outb %al, %dx
    jmp 1b
3:  mov $I8042_RESET, %al
    outb %al, $I8042_CMD
4:  hlt
    jmp 4b
.else
/* The PVH entry note: name "Xen", type 18, a 32-bit physical entry address. */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4, 4, 18
    .asciz "Xen"
    .long pvh_start
    .popsection
    .set kernel_start, pvh_start
.endif

    .code32
pvh_start:
    cli
    mov $stack_top, %esp
    mov %ebx, %ebp                  /* hvm_start_info, kept in %ebp */

    mov $msg_hello, %esi
    call puts

.if VARIANT == 2
    jmp triple_fault
.endif

    cmpl $START_INFO_MAGIC, (%ebp)
    jne no_start_info

    /* cmdline_paddr (u64 at 0x18; below 4 GiB) */
    mov $msg_cmdline, %esi
    call puts
    mov 0x18(%ebp), %esi
    test %esi, %esi
    jz 1f
    call puts_limited
1:  mov $10, %al
    call putc

    /* Memory: the sum of the RAM (type 1) entries in the memory map. */
    mov $msg_memory, %esi
    call puts
    mov 0x28(%ebp), %esi            /* memmap_paddr */
    mov 0x30(%ebp), %ecx            /* memmap_entries */
    xor %eax, %eax                  /* %edx:%eax = RAM bytes */
    xor %edx, %edx
    test %ecx, %ecx
    jz 3f
2:  cmpl $1, 16(%esi)
    jne 4f
    add 8(%esi), %eax
    adc 12(%esi), %edx
4:  add $24, %esi
    loop 2b
3:  add $0xfffff, %eax              /* round up to MiB */
    adc $0, %edx
    shrd $20, %edx, %eax
    call print_dec
    mov $10, %al
    call putc

    /* vCPUs: enabled processor entries in the MP table. */
    mov $msg_cpus, %esi
    call puts
    call count_mp_cpus
    call print_dec
    mov $10, %al
    call putc

    /* The first boot module (the initrd), when there is one: its size and first line. */
    cmpl $0, 0xc(%ebp)              /* nr_modules */
    je booted
    mov 0x10(%ebp), %ebx            /* modlist_paddr: paddr u64, size u64, ... */
    mov $msg_initrd_bytes, %esi
    call puts
    mov 8(%ebx), %eax
    call print_dec
    mov $msg_initrd_head, %esi
    call puts
    mov (%ebx), %esi
    mov 8(%ebx), %ecx
    cmp $32, %ecx
    jbe 1f
    mov $32, %ecx
1:  jecxz 3f
2:  lodsb
    cmp $10, %al
    je 3f
    call putc
    loop 2b
3:  mov $10, %al
    call putc
    jmp booted

no_start_info:
    mov $msg_no_start_info, %esi
    call puts

booted:
    movb $BOOT_TIMER_MAGIC, BOOT_TIMER

.if VARIANT == 1
    mov $msg_halt, %esi
    call puts
halt_forever:
    cli
    hlt
    jmp halt_forever
.endif

    mov $msg_reset, %esi
    call puts
    mov $I8042_RESET, %al
    outb %al, $I8042_CMD
    /* Nothing answered: fall through to a triple fault. */

triple_fault:
    lidt idt_empty
    ud2
    jmp triple_fault

/* %eax -> the number of enabled processors in the MP table, 0 without one. */
count_mp_cpus:
    push %esi
    push %ecx
    push %edx
    mov $0x9fc00, %esi              /* the EBDA's last KiB */
    mov $0xa0000, %edx
    call find_mp
    jz 5f
    mov $0xf0000, %esi              /* the BIOS ROM area */
    mov $0x100000, %edx
    call find_mp
    jz 5f
    xor %eax, %eax
    jmp 9f
5:  mov 4(%esi), %esi               /* the configuration table */
    movzwl 0x22(%esi), %ecx         /* entry count */
    add $0x2c, %esi                 /* first entry */
    xor %eax, %eax
    test %ecx, %ecx
    jz 9f
6:  cmpb $0, (%esi)
    jne 7f
    testb $1, 3(%esi)               /* enabled */
    jz 8f
    inc %eax
8:  add $20, %esi
    loop 6b
    jmp 9f
7:  add $8, %esi                    /* bus, I/O APIC and interrupt entries */
    loop 6b
9:  pop %edx
    pop %ecx
    pop %esi
    ret

/* Scans [%esi, %edx) in 16-byte steps for "_MP_"; ZF set and %esi on it when found. */
find_mp:
1:  cmp %edx, %esi
    jae 2f
    cmpl $MP_FLOAT_SIG, (%esi)
    je 3f
    add $16, %esi
    jmp 1b
2:  test %esp, %esp                 /* not found: %esp != 0 clears ZF */
3:  ret

/* Prints %eax in decimal. */
print_dec:
    push %ebx
    push %ecx
    push %edx
    mov $10, %ebx
    xor %ecx, %ecx
1:  xor %edx, %edx
    div %ebx
    push %edx
    inc %ecx
    test %eax, %eax
    jnz 1b
2:  pop %eax
    add $0x30, %al
    call putc
    loop 2b
    pop %edx
    pop %ecx
    pop %ebx
    ret

/* Prints the NUL-terminated string at %esi. */
puts:
    push %eax
1:  lodsb
    test %al, %al
    jz 2f
    call putc
    jmp 1b
2:  pop %eax
    ret

/* Prints at most 200 bytes of the NUL-terminated string at %esi. */
puts_limited:
    push %eax
    push %ecx
    mov $200, %ecx
1:  lodsb
    test %al, %al
    jz 2f
    call putc
    loop 1b
2:  pop %ecx
    pop %eax
    ret

/* Writes %al to COM1 once the transmitter holding register is empty. */
putc:
    push %edx
    push %eax
    mov $COM1_LSR, %dx
1:  inb %dx, %al
    test $LSR_THRE, %al
    jz 1b
    pop %eax
    mov $COM1, %dx
    outb %al, %dx
    pop %edx
    ret

    .section .rodata
msg_hello:          .asciz "berth-tiny-guest: hello\n"
msg_cmdline:        .asciz "berth-tiny-guest: cmdline="
msg_memory:         .asciz "berth-tiny-guest: memory-mib="
msg_cpus:           .asciz "berth-tiny-guest: cpus="
msg_initrd_bytes:   .asciz "berth-tiny-guest: initrd-bytes="
msg_initrd_head:    .asciz " initrd-head="
msg_no_start_info:  .asciz "berth-tiny-guest: no hvm_start_info\n"
msg_halt:           .asciz "berth-tiny-guest: halting\n"
msg_reset:          .asciz "berth-tiny-guest: reset\n"
msg_long:           .asciz "berth-tiny-guest: hello from long mode\n"
    .balign 8
idt_empty:
    .word 0
    .long 0

    .bss
    .balign 16
    .skip 4096
stack_top:
