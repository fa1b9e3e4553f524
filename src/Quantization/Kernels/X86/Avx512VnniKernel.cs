using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>
/// The W8A8 panel kernel in AVX-512 VNNI (512-bit <c>vpdpbusd</c>), which .NET 10 does not expose as an intrinsic:
/// the kernel is assembled at run time into executable memory, as oneDNN's JIT kernels are, and called through a
/// function pointer. Where the AVX-512 units are full width (AMD Zen 5, which this was measured on; Zen 4 splits
/// each 512-bit operation in two) it runs twice the multiply-adds per cycle of the 256-bit AVX-VNNI form.
/// </summary>
/// <remarks>
/// <para>
/// One kernel per token count T = 1..<see cref="MaxTokens"/> computes T tokens x one panel (32 channels) over a range
/// of steps, and one per T = 1..<see cref="MaxPairedTokens"/> two panels at once. Per step it loads each panel's 128
/// bytes as two 512-bit vectors (16 channels x 4 features each), broadcasts each token's four activation bytes (the int8
/// value + 128, unsigned) to all lanes and adds <c>vpdpbusd</c>: lane c gets the four products of channel c, summed
/// exactly into int32 with no intermediate saturation. The accumulators are loaded from and stored to the caller's
/// sums, so ranges of steps chain.
/// </para>
/// <para>
/// The code uses only registers the System V ABI leaves to the callee to clobber (rax, rcx, rdx, rsi, rdi, r8-r11,
/// zmm0-31) and ends with <c>vzeroupper</c>. It is built on Linux x64 when the CPU reports AVX-512BW and AVX512_VNNI
/// and the runtime enables AVX-512 (<c>DOTNET_EnableAVX512=0</c> turns it off); anywhere else, where the system
/// refuses executable pages, or where the policy of <see cref="QuantizedLinear.DisableAssembledKernelsSwitch"/> keeps it
/// off (by default where the runtime does not generate code, <see cref="RuntimeFeature.IsDynamicCodeSupported"/>
/// false, as under NativeAOT; then no page is mapped), <see cref="IsSupported"/> is false and the intrinsic paths run.
/// </para>
/// <para>
/// When the runtime writes a perf map (<c>DOTNET_PerfMapEnabled</c> 1 or 3), each kernel gets a line in it
/// (<see cref="PerfMap"/>), so that <c>perf</c> and other profilers name the code instead of showing an unknown address.
/// </para>
/// </remarks>
internal static unsafe class Avx512VnniKernel
{
    /// <summary>The most tokens one call computes on one panel: 2 x 8 accumulators and 8 broadcast activations, with the weight vectors in registers 28-31.</summary>
    public const int MaxTokens = 8;

    /// <summary>The most tokens one call computes on two panels at once (the same 16 accumulators).</summary>
    public const int MaxPairedTokens = 4;

    private const int Rax = 0, Rcx = 1, Rdx = 2, Rsi = 6, R9 = 9, R10 = 10, R11 = 11;
    private const int FirstBroadcast = 16, FirstWeight = 28;
    private const int NoIndex = -1;

    /// <summary>The kernels, built on first use when <see cref="IsEnabled"/> allows them.</summary>
    private static readonly Lazy<IntPtr[]?> Kernels = new(Build);

    /// <summary>
    /// Gets a value indicating whether the kernels run on this machine and process: the policy allows them
    /// (<see cref="IsEnabled"/>) and they could be built.
    /// </summary>
    public static bool IsSupported =>
        IsEnabled(AppContext.TryGetSwitch(QuantizedLinear.DisableAssembledKernelsSwitch, out bool disabled) ? disabled : null, RuntimeFeature.IsDynamicCodeSupported)
        && Kernels.Value is not null;

    /// <summary>Gets the address of every kernel (see <see cref="KernelIndex"/>), or <see langword="null"/> where they are not built.</summary>
    internal static IReadOnlyList<IntPtr>? Addresses => Kernels.IsValueCreated ? Kernels.Value : null;

    /// <summary>
    /// The policy: the process's <see cref="QuantizedLinear.DisableAssembledKernelsSwitch"/> decides when it is set
    /// (<see langword="true"/> off, <see langword="false"/> on); otherwise the kernels are on where the runtime itself
    /// generates code, and off where it does not (NativeAOT), as the runtime's own stance on run-time code is.
    /// </summary>
    /// <param name="disableSwitch">The switch's value, or <see langword="null"/> when the process does not set it.</param>
    /// <param name="dynamicCodeSupported"><see cref="RuntimeFeature.IsDynamicCodeSupported"/>.</param>
    /// <returns><see langword="true"/> when the kernels may be assembled.</returns>
    internal static bool IsEnabled(bool? disableSwitch, bool dynamicCodeSupported) => disableSwitch is bool disabled ? !disabled : dynamicCodeSupported;

    /// <summary>Adds <paramref name="steps"/> steps of one panel, or of two read side by side, to the sums of <paramref name="tokens"/> tokens.</summary>
    /// <param name="weights">The (first) panel's first step to read (pinned memory).</param>
    /// <param name="secondPanel">With two panels, the bytes from the first panel's step to the second's; 0 for one panel.</param>
    /// <param name="activations">The first token's first activation byte to read, prepared as unsigned bytes (value + 128).</param>
    /// <param name="stride">The bytes from one token's activations to the next.</param>
    /// <param name="steps">The number of steps; positive.</param>
    /// <param name="tokens">The number of tokens, 1 to <see cref="MaxTokens"/> (<see cref="MaxPairedTokens"/> with two panels).</param>
    /// <param name="sums">
    /// The sums, 32 per token, token-major, then with two panels the second panel's the same way: read, added to and
    /// written back.
    /// </param>
    /// <remarks>
    /// Two panels read at once are two streams from memory, which the hardware prefetchers keep further ahead than one: a
    /// single token's dot products (decoding) are bound by memory bandwidth.
    /// </remarks>
    public static void Accumulate(sbyte* weights, nint secondPanel, byte* activations, int stride, int steps, int tokens, int* sums)
    {
        // Checked in release builds too: a wrong count here would run native code off its buffers (0 steps would loop
        // until it faults, a short stride reads one token's activations as the next's, a second panel off the grid of
        // whole panels reads across two), and the checks cost nothing next to a kernel call.
        int panels = secondPanel == 0 ? 1 : 2;
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(tokens, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(tokens, panels == 1 ? MaxTokens : MaxPairedTokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(stride, (long)steps * PackedInt8Weight.StepFeatures);
        if (secondPanel % ((long)steps * PackedInt8Weight.StepBytes) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(secondPanel), secondPanel, FormattableString.Invariant($"The second panel must lie whole panels ({(long)steps * PackedInt8Weight.StepBytes} bytes) from the first."));
        }

        IntPtr[] kernels = Kernels.Value ?? throw new PlatformNotSupportedException("The AVX-512 VNNI kernels do not run on this machine or process.");
        Arguments arguments = new() { Weights = weights, Activations = activations, Stride = stride, Steps = steps, Sums = sums, SecondPanel = secondPanel };
        ((delegate* unmanaged<Arguments*, void>)kernels[KernelIndex(tokens, panels)])(&arguments);
    }

    /// <summary>Assembles the code of the kernel for <paramref name="tokens"/> tokens and one or two panels (exposed for its encoding tests).</summary>
    /// <param name="tokens">The number of tokens.</param>
    /// <param name="panels">1 or 2.</param>
    /// <returns>The machine code.</returns>
    internal static byte[] Assemble(int tokens, int panels)
    {
        Assembler a = new();
        a.Bytes(0xF3, 0x0F, 0x1E, 0xFA);       // endbr64: a valid target of an indirect call where that is enforced

        // rax = weights, rcx = token 0's activations, rdx = stride, r8 = steps, r9 = sums, r11 = the second panel's
        // distance; rsi and r10 point at tokens 3 and 6, so that token t is [rcx|rsi|r10 + rdx * (t % 3)].
        a.Bytes(0x48, 0x8B, 0x07);             // mov rax, [rdi]
        a.Bytes(0x48, 0x8B, 0x4F, 0x08);       // mov rcx, [rdi + 8]
        a.Bytes(0x48, 0x8B, 0x57, 0x10);       // mov rdx, [rdi + 16]
        a.Bytes(0x4C, 0x8B, 0x47, 0x18);       // mov r8, [rdi + 24]
        a.Bytes(0x4C, 0x8B, 0x4F, 0x20);       // mov r9, [rdi + 32]
        a.Bytes(0x4C, 0x8B, 0x5F, 0x28);       // mov r11, [rdi + 40]
        a.Bytes(0x48, 0x8D, 0x34, 0x51);       // lea rsi, [rcx + rdx * 2]
        a.Bytes(0x48, 0x01, 0xD6);             // add rsi, rdx
        a.Bytes(0x4C, 0x8D, 0x14, 0x56);       // lea r10, [rsi + rdx * 2]
        a.Bytes(0x49, 0x01, 0xD2);             // add r10, rdx

        // Panel j's token t has accumulators 2v and 2v + 1 (channels 0-15 and 16-31), v = j * tokens + t, and its sums at
        // [r9 + 128 v].
        int accumulators = 2 * tokens * panels;
        for (int v = 0; v < accumulators; v++)
        {
            a.LoadVector(v, R9, NoIndex, v * 64);
        }

        int loop = a.Position;
        for (int j = 0; j < 2 * panels; j++)
        {
            a.LoadVector(FirstWeight + j, Rax, j < 2 ? NoIndex : R11, (j % 2) * 64);
        }

        for (int t = 0; t < tokens; t++)
        {
            int token = FirstBroadcast + t;
            a.BroadcastDword(token, (t / 3) switch { 0 => Rcx, 1 => Rsi, _ => R10 }, t % 3);
            for (int j = 0; j < 2 * panels; j++)
            {
                a.DotBytes((2 * (((j / 2) * tokens) + t)) + (j % 2), token, FirstWeight + j);
            }
        }

        a.Bytes(0x48, 0x05, 0x80, 0x00, 0x00, 0x00); // add rax, 128
        a.Bytes(0x48, 0x83, 0xC1, 0x04);             // add rcx, 4
        a.Bytes(0x48, 0x83, 0xC6, 0x04);             // add rsi, 4
        a.Bytes(0x49, 0x83, 0xC2, 0x04);             // add r10, 4
        a.Bytes(0x49, 0xFF, 0xC8);                   // dec r8
        a.JumpIfNotZero(loop);
        for (int v = 0; v < accumulators; v++)
        {
            a.StoreVector(v, R9, v * 64);
        }

        a.Bytes(0xC5, 0xF8, 0x77); // vzeroupper
        a.Bytes(0xC3);             // ret
        return a.ToArray();
    }

    private static int KernelIndex(int tokens, int panels) => (panels == 1 ? 0 : MaxTokens) + tokens - 1;

    /// <summary>
    /// Assembles every kernel into one block of executable pages (each kernel at a cache-line boundary, the gaps filled
    /// with <c>int3</c>), or returns null where they cannot run: not Linux x64, no AVX512_VNNI, AVX-512 turned off, or
    /// executable pages refused. The intrinsic paths serve there.
    /// </summary>
    private static IntPtr[]? Build()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64
            || !Vector512.IsHardwareAccelerated || !Avx512BW.IsSupported || (X86Base.CpuId(7, 0).Ecx & (1 << 11)) == 0)
        {
            return null;
        }

        const int KernelAlignment = 64;
        List<byte> code = [];
        int[] offsets = new int[MaxTokens + MaxPairedTokens], lengths = new int[offsets.Length];
        for (int panels = 1; panels <= 2; panels++)
        {
            for (int t = 1; t <= (panels == 1 ? MaxTokens : MaxPairedTokens); t++)
            {
                while (code.Count % KernelAlignment != 0)
                {
                    code.Add(0xCC);
                }

                byte[] kernel = Assemble(t, panels);
                offsets[KernelIndex(t, panels)] = code.Count;
                lengths[KernelIndex(t, panels)] = kernel.Length;
                code.AddRange(kernel);
            }
        }

        IntPtr pages = ExecutableMemory.TryCreate(CollectionsMarshal.AsSpan(code));
        if (pages == IntPtr.Zero)
        {
            return null;
        }

        if (PerfMap.IsEnabled)
        {
            PerfMap.TryWrite([.. Enumerable.Range(0, offsets.Length).Select(i => (pages + offsets[i], lengths[i], Name(i)))]);
        }

        return Array.ConvertAll(offsets, offset => pages + offset);
    }

    /// <summary>The perf-map name of kernel <paramref name="index"/> (see <see cref="KernelIndex"/>).</summary>
    internal static string Name(int index) => index < MaxTokens
        ? FormattableString.Invariant($"[Quantization] Avx512VnniKernel {index + 1} token(s) x 1 panel")
        : FormattableString.Invariant($"[Quantization] Avx512VnniKernel {index - MaxTokens + 1} token(s) x 2 panels");

    /// <summary>The kernel's one argument, read through rdi.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct Arguments
    {
        public sbyte* Weights;
        public byte* Activations;
        public nint Stride;
        public nint Steps;
        public int* Sums;
        public nint SecondPanel;
    }

    /// <summary>
    /// The few x86-64 instructions the kernels need, EVEX-encoded at 512 bits (Intel SDM vol. 2, 2.7): register numbers
    /// 0-31 for zmm, 0-15 for general registers; memory operands are [base + index * 2^scale + disp] with a 32-bit
    /// displacement unless it is 0.
    /// </summary>
    private sealed class Assembler
    {
        private const int Map0F = 1, Map0F38 = 2;
        private const int Prefix66 = 1, PrefixF3 = 2;

        private readonly List<byte> _code = [];

        public int Position => _code.Count;

        public void Bytes(params ReadOnlySpan<byte> bytes)
        {
            foreach (byte b in bytes)
            {
                _code.Add(b);
            }
        }

        public byte[] ToArray() => [.. _code];

        /// <summary><c>vmovdqu32 zmm, [base + index + disp]</c>.</summary>
        public void LoadVector(int zmm, int baseRegister, int index, int displacement) => Memory(0x6F, Map0F, PrefixF3, zmm, baseRegister, index, 0, displacement);

        /// <summary><c>vmovdqu32 [base + disp], zmm</c>.</summary>
        public void StoreVector(int zmm, int baseRegister, int displacement) => Memory(0x7F, Map0F, PrefixF3, zmm, baseRegister, NoIndex, 0, displacement);

        /// <summary><c>vpbroadcastd zmm, dword [base + rdx * scale]</c>, scale 0 meaning no index.</summary>
        public void BroadcastDword(int zmm, int baseRegister, int indexScale) =>
            Memory(0x58, Map0F38, Prefix66, zmm, baseRegister, indexScale == 0 ? NoIndex : Rdx, indexScale - 1, 0);

        /// <summary><c>vpdpbusd accumulator, unsignedBytes, signedBytes</c>.</summary>
        public void DotBytes(int accumulator, int unsignedBytes, int signedBytes)
        {
            Prefix(Map0F38, Prefix66, accumulator, unsignedBytes, rmHigh: signedBytes >> 3, xHigh: signedBytes >> 4);
            Bytes(0x50, (byte)(0xC0 | ((accumulator & 7) << 3) | (signedBytes & 7)));
        }

        /// <summary><c>jnz target</c> with a 32-bit offset.</summary>
        public void JumpIfNotZero(int target)
        {
            Bytes(0x0F, 0x85);
            int offset = target - (Position + sizeof(int));
            Bytes((byte)offset, (byte)(offset >> 8), (byte)(offset >> 16), (byte)(offset >> 24));
        }

        private void Memory(byte opcode, int map, int prefix, int zmm, int baseRegister, int index, int scaleLog2, int displacement)
        {
            Debug.Assert((baseRegister & 7) != 4, "No rsp or r12 base (it would need a SIB byte of its own).");
            Prefix(map, prefix, zmm, vvvv: 0, rmHigh: baseRegister >> 3, xHigh: index == NoIndex ? 0 : index >> 3);
            bool disp32 = displacement != 0 || (baseRegister & 7) == 5;
            int mod = disp32 ? 0b10 : 0b00;
            if (index == NoIndex)
            {
                Bytes(opcode, (byte)((mod << 6) | ((zmm & 7) << 3) | (baseRegister & 7)));
            }
            else
            {
                Bytes(opcode, (byte)((mod << 6) | ((zmm & 7) << 3) | 0b100), (byte)((scaleLog2 << 6) | ((index & 7) << 3) | (baseRegister & 7)));
            }

            if (disp32)
            {
                Bytes((byte)displacement, (byte)(displacement >> 8), (byte)(displacement >> 16), (byte)(displacement >> 24));
            }
        }

        /// <summary>
        /// The four EVEX bytes, 512-bit, W0, no mask; the register-extension bits are stored inverted, so an unused
        /// vvvv (memory forms) is register 0.
        /// </summary>
        private void Prefix(int map, int prefix, int reg, int vvvv, int rmHigh, int xHigh)
        {
            int p0 = (((~reg >> 3) & 1) << 7) | (((~xHigh) & 1) << 6) | (((~rmHigh) & 1) << 5) | (((~reg >> 4) & 1) << 4) | map;
            int p1 = ((~vvvv & 0xF) << 3) | 0b100 | prefix;
            int p2 = (0b10 << 5) | (((~vvvv >> 4) & 1) << 3);
            Bytes(0x62, (byte)p0, (byte)p1, (byte)p2);
        }
    }
}
