using System.Diagnostics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>
/// The W8A8 kernel: exact int32 dot products of int8 activations (tokens) with one panel of a
/// <see cref="PackedInt8Weight"/>. Every path gives the same sums, <c>sum_k x[t, k] * w[n, k]</c> in int32 arithmetic
/// (which wraps identically on every path; with activations in [-127, 127] it cannot overflow below 133,000 input features).
/// </summary>
/// <remarks>
/// The activations are first prepared for the path (<see cref="PrepareActivations"/>): unsigned bytes (value + 128)
/// for AVX-VNNI, int16 for the <c>vpmaddwd</c> paths, the int8 values for the others; one row of
/// <see cref="PackedInt8Weight.PaddedInFeatures"/> elements per token.
/// </remarks>
internal static class Int8PanelKernel
{
    /// <summary>
    /// Tokens the AVX-VNNI path computes together: each weight vector it loads serves all three, and 12 accumulators
    /// plus 3 broadcast activations fill 15 of the 16 registers the VEX-encoded instruction can address.
    /// </summary>
    private const int VnniTokenTile = 3;

    /// <summary>
    /// Steps the AVX-VNNI path runs for all tokens before moving on (K blocking): 128 steps of a panel are 16 KiB, which
    /// stay in the L1 cache while every tile of tokens reads them, instead of streaming the whole panel from L2 per tile.
    /// </summary>
    private const int VnniStepBlock = 128;

    /// <summary>Gets the size in bytes of one prepared activation element.</summary>
    /// <param name="path">The kernel path.</param>
    /// <returns>2 for the int16 paths, else 1.</returns>
    public static int ActivationBytes(Int8KernelPath path) => path is Int8KernelPath.Vector512 or Int8KernelPath.Vector256 ? sizeof(short) : sizeof(sbyte);

    /// <summary>Converts quantized activations to the form a path reads.</summary>
    /// <param name="path">The kernel path.</param>
    /// <param name="quantized">The int8 activations, padded rows.</param>
    /// <param name="prepared">Receives <c>quantized.Length * ActivationBytes(path)</c> bytes.</param>
    public static void PrepareActivations(Int8KernelPath path, ReadOnlySpan<sbyte> quantized, Span<byte> prepared)
    {
        Debug.Assert(prepared.Length == quantized.Length * ActivationBytes(path), "The prepared buffer fits the path.");
        switch (path)
        {
            case Int8KernelPath.AvxVnni or Int8KernelPath.Avx512Vnni:
                TensorPrimitives.Xor(MemoryMarshal.AsBytes(quantized), (byte)0x80, prepared);
                break;
            case Int8KernelPath.Vector512 or Int8KernelPath.Vector256:
                TensorPrimitives.ConvertChecked(quantized, MemoryMarshal.Cast<byte, short>(prepared));
                break;
            default:
                MemoryMarshal.AsBytes(quantized).CopyTo(prepared);
                break;
        }
    }

    /// <summary>Computes the dot products of <paramref name="tokens"/> prepared activation rows with one panel's channels.</summary>
    /// <param name="path">The kernel path; the activations must have been prepared for it.</param>
    /// <param name="weight">The packed weight.</param>
    /// <param name="panel">The panel index.</param>
    /// <param name="activations">The prepared activations, one padded row per token.</param>
    /// <param name="tokens">The number of tokens.</param>
    /// <param name="sums">Receives <c>tokens x 32</c> sums, token-major.</param>
    public static void Accumulate(Int8KernelPath path, PackedInt8Weight weight, int panel, ReadOnlySpan<byte> activations, int tokens, Span<int> sums)
    {
        Debug.Assert(Int8KernelPaths.IsSupported(path), "Callers choose a supported path.");
        Debug.Assert(activations.Length >= tokens * weight.PaddedInFeatures * ActivationBytes(path), "One row per token.");
        Debug.Assert(sums.Length >= tokens * PackedInt8Weight.PanelRows, "32 sums per token.");
        ref sbyte w = ref weight.GetPanel(panel);
        ref byte x = ref MemoryMarshal.GetReference(activations);
        int stride = weight.PaddedInFeatures * ActivationBytes(path);
        int steps = weight.Steps;
        switch (path)
        {
            case Int8KernelPath.Avx512Vnni:
                Avx512VnniTiles(weight, panel, activations, tokens, sums);
                RemoveActivationOffset(weight, panel, tokens, sums);
                break;
            case Int8KernelPath.AvxVnni:
                sums[..(tokens * PackedInt8Weight.PanelRows)].Clear();
                for (int first = 0; first < steps; first += VnniStepBlock)
                {
                    VnniStepRange(ref Unsafe.Add(ref w, first * PackedInt8Weight.StepBytes), Math.Min(VnniStepBlock, steps - first), ref Unsafe.Add(ref x, first * PackedInt8Weight.StepFeatures), stride, tokens, sums);
                }

                RemoveActivationOffset(weight, panel, tokens, sums);
                break;
            case Int8KernelPath.Vector512:
                for (int token = 0; token < tokens; token++)
                {
                    Vector512Token(ref w, steps, ref Unsafe.Add(ref x, token * stride), sums.Slice(token * PackedInt8Weight.PanelRows));
                }

                break;
            case Int8KernelPath.Vector256:
                for (int token = 0; token < tokens; token++)
                {
                    Vector256Token(ref w, steps, ref Unsafe.Add(ref x, token * stride), sums.Slice(token * PackedInt8Weight.PanelRows));
                }

                break;
            case Int8KernelPath.Vector128:
                for (int token = 0; token < tokens; token++)
                {
                    Vector128Token(ref w, steps, ref Unsafe.As<byte, sbyte>(ref Unsafe.Add(ref x, token * stride)), sums.Slice(token * PackedInt8Weight.PanelRows));
                }

                break;
            default:
                for (int token = 0; token < tokens; token++)
                {
                    ScalarToken(ref w, steps, ref Unsafe.As<byte, sbyte>(ref Unsafe.Add(ref x, token * stride)), sums.Slice(token * PackedInt8Weight.PanelRows));
                }

                break;
        }
    }

    /// <summary>Gets whether <see cref="AccumulatePair"/> serves a path and token count: AVX-512 VNNI, up to four tokens.</summary>
    /// <param name="path">The kernel path.</param>
    /// <param name="tokens">The number of tokens.</param>
    /// <returns><see langword="true"/> when two panels are best computed together.</returns>
    public static bool PairsPanels(Int8KernelPath path, int tokens) => path == Int8KernelPath.Avx512Vnni && tokens <= Avx512VnniKernel.MaxPairedTokens;

    /// <summary>
    /// <see cref="Accumulate"/> for two panels at once, reading them as two streams (see <see cref="PairsPanels"/>):
    /// the sums of <paramref name="panel"/>, then those of <paramref name="other"/>, <c>tokens x 32</c> each.
    /// </summary>
    /// <param name="weight">The packed weight.</param>
    /// <param name="panel">The first panel.</param>
    /// <param name="other">The second panel.</param>
    /// <param name="activations">The activations, prepared for <see cref="Int8KernelPath.Avx512Vnni"/>.</param>
    /// <param name="tokens">The number of tokens.</param>
    /// <param name="sums">Receives <c>2 x tokens x 32</c> sums.</param>
    public static unsafe void AccumulatePair(PackedInt8Weight weight, int panel, int other, ReadOnlySpan<byte> activations, int tokens, Span<int> sums)
    {
        Debug.Assert(PairsPanels(Int8KernelPath.Avx512Vnni, tokens) && Int8KernelPaths.IsSupported(Int8KernelPath.Avx512Vnni), "A supported pair.");
        int rows = tokens * PackedInt8Weight.PanelRows;
        ThrowIfNotPanel(weight, panel, nameof(panel));
        ThrowIfNotPanel(weight, other, nameof(other));
        ThrowIfShort(activations, tokens, weight.PaddedInFeatures);
        sums[..(2 * rows)].Clear();
        fixed (byte* x = activations)
        fixed (int* s = sums)
        {
            sbyte* first = weight.GetPanelPointer(panel);
            Avx512VnniKernel.Accumulate(first, (nint)(weight.GetPanelPointer(other) - first), x, weight.PaddedInFeatures, weight.Steps, tokens, s);
        }

        RemoveActivationOffset(weight, panel, tokens, sums);
        RemoveActivationOffset(weight, other, tokens, sums[rows..]);
    }

    /// <summary>Runs the AVX-512 VNNI kernel over all steps of a panel, for tiles of up to eight tokens.</summary>
    private static unsafe void Avx512VnniTiles(PackedInt8Weight weight, int panel, ReadOnlySpan<byte> activations, int tokens, Span<int> sums)
    {
        int stride = weight.PaddedInFeatures;
        ThrowIfNotPanel(weight, panel, nameof(panel));
        ThrowIfShort(activations, tokens, stride);
        sums[..(tokens * PackedInt8Weight.PanelRows)].Clear();
        sbyte* w = weight.GetPanelPointer(panel);
        fixed (byte* x = activations)
        fixed (int* s = sums)
        {
            for (int t = 0; t < tokens; t += Avx512VnniKernel.MaxTokens)
            {
                Avx512VnniKernel.Accumulate(w, 0, x + ((long)t * stride), stride, weight.Steps, Math.Min(Avx512VnniKernel.MaxTokens, tokens - t), s + (t * PackedInt8Weight.PanelRows));
            }
        }
    }

    /// <summary>Checks, in release builds too, that native code handed a panel's address reads inside the weight.</summary>
    private static void ThrowIfNotPanel(PackedInt8Weight weight, int panel, string name)
    {
        if ((uint)panel >= (uint)weight.Panels)
        {
            throw new ArgumentOutOfRangeException(name, panel, FormattableString.Invariant($"The weight has {weight.Panels} panels."));
        }
    }

    /// <summary>Checks, in release builds too, that native code handed these activations stays inside them.</summary>
    private static void ThrowIfShort(ReadOnlySpan<byte> activations, int tokens, int stride)
    {
        if (activations.Length < (long)tokens * stride)
        {
            throw new ArgumentException(FormattableString.Invariant($"{tokens} tokens of {stride} prepared activation bytes need {(long)tokens * stride}, not {activations.Length}."), nameof(activations));
        }
    }

    /// <summary>The VNNI sums are of (x + 128) * w: subtract 128 x the channel's weight sum (exact in int32).</summary>
    private static void RemoveActivationOffset(PackedInt8Weight weight, int panel, int tokens, Span<int> sums)
    {
        ReadOnlySpan<int> offsets = weight.ActivationOffsets.AsSpan(panel * PackedInt8Weight.PanelRows, PackedInt8Weight.PanelRows);
        for (int t = 0; t < tokens; t++)
        {
            Span<int> row = sums.Slice(t * PackedInt8Weight.PanelRows, PackedInt8Weight.PanelRows);
            TensorPrimitives.Subtract(row, offsets, row);
        }
    }

    /// <summary>Broadcasts the four activation bytes of a step to every int32 lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> BroadcastStep(ref byte x, int step) =>
        Vector256.Create(Unsafe.ReadUnaligned<int>(ref Unsafe.Add(ref x, step * PackedInt8Weight.StepFeatures))).AsByte();

    /// <summary>Adds one block of steps to every token's sums, three tokens at a time.</summary>
    private static void VnniStepRange(ref sbyte w, int steps, ref byte x, int stride, int tokens, Span<int> sums)
    {
        int t = 0;
        for (; t + VnniTokenTile <= tokens; t += VnniTokenTile)
        {
            VnniThreeTokens(ref w, steps, ref Unsafe.Add(ref x, t * stride), stride, sums.Slice(t * PackedInt8Weight.PanelRows));
        }

        if (tokens - t == 2)
        {
            VnniTwoTokens(ref w, steps, ref Unsafe.Add(ref x, t * stride), stride, sums.Slice(t * PackedInt8Weight.PanelRows));
        }
        else if (tokens - t == 1)
        {
            VnniOneToken(ref w, steps, ref Unsafe.Add(ref x, t * stride), sums.Slice(t * PackedInt8Weight.PanelRows));
        }
    }

    private static void VnniThreeTokens(ref sbyte w, int steps, ref byte x0, int stride, Span<int> sums)
    {
        ref byte x1 = ref Unsafe.Add(ref x0, stride);
        ref byte x2 = ref Unsafe.Add(ref x1, stride);
        ref int s0 = ref MemoryMarshal.GetReference(sums);
        Vector256<int> a0 = Vector256.LoadUnsafe(ref s0, 0), a1 = Vector256.LoadUnsafe(ref s0, 8), a2 = Vector256.LoadUnsafe(ref s0, 16), a3 = Vector256.LoadUnsafe(ref s0, 24);
        Vector256<int> b0 = Vector256.LoadUnsafe(ref s0, 32), b1 = Vector256.LoadUnsafe(ref s0, 40), b2 = Vector256.LoadUnsafe(ref s0, 48), b3 = Vector256.LoadUnsafe(ref s0, 56);
        Vector256<int> c0 = Vector256.LoadUnsafe(ref s0, 64), c1 = Vector256.LoadUnsafe(ref s0, 72), c2 = Vector256.LoadUnsafe(ref s0, 80), c3 = Vector256.LoadUnsafe(ref s0, 88);
        for (int s = 0; s < steps; s++)
        {
            Vector256<byte> p = BroadcastStep(ref x0, s);
            Vector256<byte> q = BroadcastStep(ref x1, s);
            Vector256<byte> r = BroadcastStep(ref x2, s);
            Vector256<sbyte> w0 = Vector256.LoadUnsafe(ref w);
            a0 = AvxVnni.MultiplyWideningAndAdd(a0, p, w0);
            b0 = AvxVnni.MultiplyWideningAndAdd(b0, q, w0);
            c0 = AvxVnni.MultiplyWideningAndAdd(c0, r, w0);
            Vector256<sbyte> w1 = Vector256.LoadUnsafe(ref w, 32);
            a1 = AvxVnni.MultiplyWideningAndAdd(a1, p, w1);
            b1 = AvxVnni.MultiplyWideningAndAdd(b1, q, w1);
            c1 = AvxVnni.MultiplyWideningAndAdd(c1, r, w1);
            Vector256<sbyte> w2 = Vector256.LoadUnsafe(ref w, 64);
            a2 = AvxVnni.MultiplyWideningAndAdd(a2, p, w2);
            b2 = AvxVnni.MultiplyWideningAndAdd(b2, q, w2);
            c2 = AvxVnni.MultiplyWideningAndAdd(c2, r, w2);
            Vector256<sbyte> w3 = Vector256.LoadUnsafe(ref w, 96);
            a3 = AvxVnni.MultiplyWideningAndAdd(a3, p, w3);
            b3 = AvxVnni.MultiplyWideningAndAdd(b3, q, w3);
            c3 = AvxVnni.MultiplyWideningAndAdd(c3, r, w3);
            w = ref Unsafe.Add(ref w, PackedInt8Weight.StepBytes);
        }

        a0.StoreUnsafe(ref s0, 0);
        a1.StoreUnsafe(ref s0, 8);
        a2.StoreUnsafe(ref s0, 16);
        a3.StoreUnsafe(ref s0, 24);
        b0.StoreUnsafe(ref s0, 32);
        b1.StoreUnsafe(ref s0, 40);
        b2.StoreUnsafe(ref s0, 48);
        b3.StoreUnsafe(ref s0, 56);
        c0.StoreUnsafe(ref s0, 64);
        c1.StoreUnsafe(ref s0, 72);
        c2.StoreUnsafe(ref s0, 80);
        c3.StoreUnsafe(ref s0, 88);
    }

    private static void VnniTwoTokens(ref sbyte w, int steps, ref byte x0, int stride, Span<int> sums)
    {
        ref byte x1 = ref Unsafe.Add(ref x0, stride);
        ref int s0 = ref MemoryMarshal.GetReference(sums);
        Vector256<int> a0 = Vector256.LoadUnsafe(ref s0, 0), a1 = Vector256.LoadUnsafe(ref s0, 8), a2 = Vector256.LoadUnsafe(ref s0, 16), a3 = Vector256.LoadUnsafe(ref s0, 24);
        Vector256<int> b0 = Vector256.LoadUnsafe(ref s0, 32), b1 = Vector256.LoadUnsafe(ref s0, 40), b2 = Vector256.LoadUnsafe(ref s0, 48), b3 = Vector256.LoadUnsafe(ref s0, 56);
        for (int s = 0; s < steps; s++)
        {
            Vector256<byte> p = BroadcastStep(ref x0, s);
            Vector256<byte> q = BroadcastStep(ref x1, s);
            Vector256<sbyte> w0 = Vector256.LoadUnsafe(ref w);
            Vector256<sbyte> w1 = Vector256.LoadUnsafe(ref w, 32);
            Vector256<sbyte> w2 = Vector256.LoadUnsafe(ref w, 64);
            Vector256<sbyte> w3 = Vector256.LoadUnsafe(ref w, 96);
            a0 = AvxVnni.MultiplyWideningAndAdd(a0, p, w0);
            a1 = AvxVnni.MultiplyWideningAndAdd(a1, p, w1);
            a2 = AvxVnni.MultiplyWideningAndAdd(a2, p, w2);
            a3 = AvxVnni.MultiplyWideningAndAdd(a3, p, w3);
            b0 = AvxVnni.MultiplyWideningAndAdd(b0, q, w0);
            b1 = AvxVnni.MultiplyWideningAndAdd(b1, q, w1);
            b2 = AvxVnni.MultiplyWideningAndAdd(b2, q, w2);
            b3 = AvxVnni.MultiplyWideningAndAdd(b3, q, w3);
            w = ref Unsafe.Add(ref w, PackedInt8Weight.StepBytes);
        }

        a0.StoreUnsafe(ref s0, 0);
        a1.StoreUnsafe(ref s0, 8);
        a2.StoreUnsafe(ref s0, 16);
        a3.StoreUnsafe(ref s0, 24);
        b0.StoreUnsafe(ref s0, 32);
        b1.StoreUnsafe(ref s0, 40);
        b2.StoreUnsafe(ref s0, 48);
        b3.StoreUnsafe(ref s0, 56);
    }

    private static void VnniOneToken(ref sbyte w, int steps, ref byte x, Span<int> sums)
    {
        ref int s0 = ref MemoryMarshal.GetReference(sums);
        Vector256<int> a0 = Vector256.LoadUnsafe(ref s0, 0), a1 = Vector256.LoadUnsafe(ref s0, 8), a2 = Vector256.LoadUnsafe(ref s0, 16), a3 = Vector256.LoadUnsafe(ref s0, 24);
        for (int s = 0; s < steps; s++)
        {
            Vector256<byte> p = BroadcastStep(ref x, s);
            a0 = AvxVnni.MultiplyWideningAndAdd(a0, p, Vector256.LoadUnsafe(ref w));
            a1 = AvxVnni.MultiplyWideningAndAdd(a1, p, Vector256.LoadUnsafe(ref w, 32));
            a2 = AvxVnni.MultiplyWideningAndAdd(a2, p, Vector256.LoadUnsafe(ref w, 64));
            a3 = AvxVnni.MultiplyWideningAndAdd(a3, p, Vector256.LoadUnsafe(ref w, 96));
            w = ref Unsafe.Add(ref w, PackedInt8Weight.StepBytes);
        }

        a0.StoreUnsafe(ref s0, 0);
        a1.StoreUnsafe(ref s0, 8);
        a2.StoreUnsafe(ref s0, 16);
        a3.StoreUnsafe(ref s0, 24);
    }

    /// <summary>
    /// 32 weights (8 channels x 4 features) widened to int16 and multiplied by the step's four int16 activations
    /// (broadcast as one 64-bit value): <c>vpmaddwd</c> sums adjacent products, so lane i holds half of channel i / 2's
    /// step; the halves are added at the end. |-128 x -128 + -128 x -128| = 32768 fits int32: no saturation.
    /// </summary>
    private static void Vector512Token(ref sbyte w, int steps, ref byte x, Span<int> sums)
    {
        ref short xs = ref Unsafe.As<byte, short>(ref x);
        Vector512<int> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int s = 0; s < steps; s++)
        {
            Vector512<short> p = Vector512.Create(Unsafe.ReadUnaligned<long>(ref Unsafe.As<short, byte>(ref Unsafe.Add(ref xs, s * PackedInt8Weight.StepFeatures)))).AsInt16();
            a0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.LoadUnsafe(ref w)), p);
            a1 += Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.LoadUnsafe(ref w, 32)), p);
            a2 += Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.LoadUnsafe(ref w, 64)), p);
            a3 += Avx512BW.MultiplyAddAdjacent(Avx512BW.ConvertToVector512Int16(Vector256.LoadUnsafe(ref w, 96)), p);
            w = ref Unsafe.Add(ref w, PackedInt8Weight.StepBytes);
        }

        Span<int> halves = stackalloc int[2 * PackedInt8Weight.PanelRows];
        ref int h = ref MemoryMarshal.GetReference(halves);
        a0.StoreUnsafe(ref h, 0);
        a1.StoreUnsafe(ref h, 16);
        a2.StoreUnsafe(ref h, 32);
        a3.StoreUnsafe(ref h, 48);
        AddPairs(halves, sums);
    }

    /// <summary>The AVX2 form of <see cref="Vector512Token"/>: 16 weights (4 channels x 4 features) per <c>vpmaddwd</c>.</summary>
    private static void Vector256Token(ref sbyte w, int steps, ref byte x, Span<int> sums)
    {
        ref short xs = ref Unsafe.As<byte, short>(ref x);
        Vector256<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (int s = 0; s < steps; s++)
        {
            Vector256<short> p = Vector256.Create(Unsafe.ReadUnaligned<long>(ref Unsafe.As<short, byte>(ref Unsafe.Add(ref xs, s * PackedInt8Weight.StepFeatures)))).AsInt16();
            a0 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref w)), p);
            a1 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref w, 16)), p);
            a2 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref w, 32)), p);
            a3 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref w, 48)), p);
            a4 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref w, 64)), p);
            a5 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref w, 80)), p);
            a6 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref w, 96)), p);
            a7 += Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(Vector128.LoadUnsafe(ref w, 112)), p);
            w = ref Unsafe.Add(ref w, PackedInt8Weight.StepBytes);
        }

        Span<int> halves = stackalloc int[2 * PackedInt8Weight.PanelRows];
        ref int h = ref MemoryMarshal.GetReference(halves);
        a0.StoreUnsafe(ref h, 0);
        a1.StoreUnsafe(ref h, 8);
        a2.StoreUnsafe(ref h, 16);
        a3.StoreUnsafe(ref h, 24);
        a4.StoreUnsafe(ref h, 32);
        a5.StoreUnsafe(ref h, 40);
        a6.StoreUnsafe(ref h, 48);
        a7.StoreUnsafe(ref h, 56);
        AddPairs(halves, sums);
    }

    private static void AddPairs(ReadOnlySpan<int> halves, Span<int> sums)
    {
        for (int c = 0; c < PackedInt8Weight.PanelRows; c++)
        {
            sums[c] = halves[2 * c] + halves[(2 * c) + 1];
        }
    }

    /// <summary>Widens a step's four bytes to four int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> WidenStep(ref sbyte source, int offset) =>
        Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<int>(ref Unsafe.As<sbyte, byte>(ref Unsafe.Add(ref source, offset)))).AsSByte()));

    /// <summary>
    /// Portable: one int32 lane per (channel, feature mod 4), eight channels a pass (eight accumulators), four passes per
    /// panel; each pass reads 32 of every 128 bytes.
    /// </summary>
    private static void Vector128Token(ref sbyte w, int steps, ref sbyte x, Span<int> sums)
    {
        const int ChannelsPerPass = 8;
        for (int first = 0; first < PackedInt8Weight.PanelRows; first += ChannelsPerPass)
        {
            ref sbyte wp = ref Unsafe.Add(ref w, first * PackedInt8Weight.StepFeatures);
            Vector128<int> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            for (int s = 0; s < steps; s++)
            {
                Vector128<int> p = WidenStep(ref x, s * PackedInt8Weight.StepFeatures);
                a0 += WidenStep(ref wp, 0) * p;
                a1 += WidenStep(ref wp, 4) * p;
                a2 += WidenStep(ref wp, 8) * p;
                a3 += WidenStep(ref wp, 12) * p;
                a4 += WidenStep(ref wp, 16) * p;
                a5 += WidenStep(ref wp, 20) * p;
                a6 += WidenStep(ref wp, 24) * p;
                a7 += WidenStep(ref wp, 28) * p;
                wp = ref Unsafe.Add(ref wp, PackedInt8Weight.StepBytes);
            }

            sums[first] = Vector128.Sum(a0);
            sums[first + 1] = Vector128.Sum(a1);
            sums[first + 2] = Vector128.Sum(a2);
            sums[first + 3] = Vector128.Sum(a3);
            sums[first + 4] = Vector128.Sum(a4);
            sums[first + 5] = Vector128.Sum(a5);
            sums[first + 6] = Vector128.Sum(a6);
            sums[first + 7] = Vector128.Sum(a7);
        }
    }

    private static void ScalarToken(ref sbyte w, int steps, ref sbyte x, Span<int> sums)
    {
        Span<int> acc = sums[..PackedInt8Weight.PanelRows];
        acc.Clear();
        for (int s = 0; s < steps; s++)
        {
            for (int c = 0; c < PackedInt8Weight.PanelRows; c++)
            {
                for (int j = 0; j < PackedInt8Weight.StepFeatures; j++)
                {
                    acc[c] += Unsafe.Add(ref x, (s * PackedInt8Weight.StepFeatures) + j) * Unsafe.Add(ref w, (c * PackedInt8Weight.StepFeatures) + j);
                }
            }

            w = ref Unsafe.Add(ref w, PackedInt8Weight.StepBytes);
        }
    }
}
