#!/usr/bin/env python3
"""Writes the GNU as source of every AVX-512 VNNI W8A8 kernel (1-8 tokens on one panel, 1-4 tokens on two panels) and
assembles each into the .hex file Avx512VnniKernelTests compares Avx512VnniKernel.Assemble with.

Run from this folder: python3 make-avx512-vnni-kernels.py (needs GNU as, objcopy and xxd)."""
import subprocess


def name(tokens, panels):
    suffix = "" if panels == 1 else f"-{panels}-panels"
    return f"avx512-vnni-kernel-{tokens}-{'token' if tokens == 1 else 'tokens'}{suffix}"


def disp(text, offset):
    return f"{{disp32}} {text} + {offset}]" if offset else f"{text}]"


def source(tokens, panels):
    n = name(tokens, panels)
    lines = [
        "# The AVX-512 VNNI W8A8 kernel (src/Quantization/Kernels/X86/Avx512VnniKernel.cs) as GNU as 2.40 assembles it; the test",
        f"# compares Avx512VnniKernel.Assemble with {n}.hex, made by:",
        f"#   as {n}.s -o k.o && objcopy -O binary -j .text k.o k.bin && xxd -p k.bin | tr -d '\\n' > {n}.hex",
        "# {disp32} asks for the 32-bit displacement the kernel's assembler writes wherever one is not 0.",
        ".intel_syntax noprefix",
        ".text",
        "kernel:",
        "endbr64",
        "mov rax, [rdi]",
        "mov rcx, [rdi + 8]",
        "mov rdx, [rdi + 16]",
        "mov r8, [rdi + 24]",
        "mov r9, [rdi + 32]",
        "mov r11, [rdi + 40]",
        "lea rsi, [rcx + rdx * 2]",
        "add rsi, rdx",
        "lea r10, [rsi + rdx * 2]",
        "add r10, rdx",
    ]
    accumulators = 2 * tokens * panels
    lines += [disp(f"vmovdqu32 zmm{v}, [r9", v * 64) for v in range(accumulators)]
    lines.append("loop:")
    for j in range(2 * panels):
        base = "rax" if j < 2 else "rax + r11"
        lines.append(disp(f"vmovdqu32 zmm{28 + j}, [{base}", (j % 2) * 64))
    for t in range(tokens):
        register = ["rcx", "rsi", "r10"][t // 3]
        index = ["", " + rdx", " + rdx * 2"][t % 3]
        lines.append(f"vpbroadcastd zmm{16 + t}, dword ptr [{register}{index}]")
        for j in range(2 * panels):
            lines.append(f"vpdpbusd zmm{2 * ((j // 2) * tokens + t) + j % 2}, zmm{16 + t}, zmm{28 + j}")
    lines += ["add rax, 128", "add rcx, 4", "add rsi, 4", "add r10, 4", "dec r8", "{disp32} jnz loop"]
    lines += [disp(f"vmovdqu32 [r9", v * 64).replace("]", "], zmm" + str(v)) for v in range(accumulators)]
    lines += ["vzeroupper", "ret"]
    return n, "\n".join(lines) + "\n"


for panels, most in ((1, 8), (2, 4)):
    for tokens in range(1, most + 1):
        n, text = source(tokens, panels)
        with open(f"{n}.s", "w", encoding="ascii") as f:
            f.write(text)
        subprocess.run(["as", f"{n}.s", "-o", "k.o"], check=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", "k.o", "k.bin"], check=True)
        hex_text = subprocess.run(["xxd", "-p", "k.bin"], check=True, capture_output=True, text=True).stdout.replace("\n", "")
        with open(f"{n}.hex", "w", encoding="ascii") as f:
            f.write(hex_text)
for leftover in ("k.o", "k.bin"):
    subprocess.run(["rm", "-f", leftover], check=True)
