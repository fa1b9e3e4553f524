using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>
/// The W8A16 (weight-only) kernel: float activations times int8 weights converted to float on the fly, for one panel
/// of a <see cref="PackedInt8Weight"/>. The per-channel scale is applied after the dot product, so it is not in the loop.
/// </summary>
/// <remarks>
/// Every path keeps one float accumulator per (channel, feature mod 4) and adds each step to it with one fused
/// multiply-add, in step order: the packed layout puts those four features of a channel side by side, so a 512-bit
/// vector holds 4 channels, a 256-bit one 2 and a 128-bit one 1, and the scalar path does the same sums one at a time.
/// The results are therefore the same bits on every tier.
/// </remarks>
internal static class WeightOnlyPanelKernel
{
    /// <summary>Accumulators per token: one per (channel, feature mod 4).</summary>
    public const int Lanes = PackedInt8Weight.PanelRows * PackedInt8Weight.StepFeatures;

    /// <summary>Gets the most tokens one <see cref="Accumulate"/> call computes on a tier.</summary>
    /// <param name="tier">The vector tier.</param>
    /// <returns>2 for 512-bit vectors (each weight is converted once for both), else 1.</returns>
    public static int MaxTokens(SimdTier tier) => tier == SimdTier.Vector512 ? 2 : 1;

    /// <summary>Computes the partial sums of one or two activation rows with one panel's channels.</summary>
    /// <param name="tier">The vector tier to run.</param>
    /// <param name="weight">The packed weight.</param>
    /// <param name="panel">The panel index.</param>
    /// <param name="x">The tokens' activations, each padded to <see cref="PackedInt8Weight.PaddedInFeatures"/> with zeros.</param>
    /// <param name="tokens">The number of tokens, 1 to <see cref="MaxTokens"/>.</param>
    /// <param name="lanes">Receives <see cref="Lanes"/> partial sums per token, channel-major.</param>
    public static unsafe void Accumulate(SimdTier tier, PackedInt8Weight weight, int panel, ReadOnlySpan<float> x, int tokens, Span<float> lanes)
    {
        Debug.Assert(tokens >= 1 && tokens <= MaxTokens(tier), "As many tokens as the tier computes together.");
        Debug.Assert(x.Length == tokens * weight.PaddedInFeatures, "One padded row per token.");
        Debug.Assert(lanes.Length >= tokens * Lanes, "One accumulator per lane and token.");
        ref sbyte w = ref weight.GetPanel(panel);
        fixed (float* xp = x)
        {
            switch (tier)
            {
                case SimdTier.Vector512 when tokens == 2:
                    Vector512PanelTwoTokens(ref w, weight.Steps, xp, xp + weight.PaddedInFeatures, lanes);
                    break;
                case SimdTier.Vector512:
                    Vector512Panel(ref w, weight.Steps, xp, lanes);
                    break;
                case SimdTier.Vector256:
                    Vector256Panel(ref w, weight.Steps, xp, lanes);
                    break;
                case SimdTier.Vector128:
                    Vector128Panel(ref w, weight.Steps, xp, lanes);
                    break;
                default:
                    ScalarPanel(ref w, weight.Steps, xp, lanes);
                    break;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Widen16(ref sbyte w, int offset) =>
        Vector512.ConvertToSingle(Avx512F.ConvertToVector512Int32(Vector128.LoadUnsafe(ref w, (nuint)offset)));

    /// <summary>Eight accumulators of 4 channels x 4 features: the whole panel in one pass.</summary>
    private static unsafe void Vector512Panel(ref sbyte w, int steps, float* x, Span<float> lanes)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (int s = 0; s < steps; s++)
        {
            Vector512<float> p = Avx512F.BroadcastVector128ToVector512(x + (s * PackedInt8Weight.StepFeatures));
            a0 = Vector512.FusedMultiplyAdd(Widen16(ref w, 0), p, a0);
            a1 = Vector512.FusedMultiplyAdd(Widen16(ref w, 16), p, a1);
            a2 = Vector512.FusedMultiplyAdd(Widen16(ref w, 32), p, a2);
            a3 = Vector512.FusedMultiplyAdd(Widen16(ref w, 48), p, a3);
            a4 = Vector512.FusedMultiplyAdd(Widen16(ref w, 64), p, a4);
            a5 = Vector512.FusedMultiplyAdd(Widen16(ref w, 80), p, a5);
            a6 = Vector512.FusedMultiplyAdd(Widen16(ref w, 96), p, a6);
            a7 = Vector512.FusedMultiplyAdd(Widen16(ref w, 112), p, a7);
            w = ref Unsafe.Add(ref w, PackedInt8Weight.StepBytes);
        }

        ref float l = ref MemoryMarshal.GetReference(lanes);
        a0.StoreUnsafe(ref l, 0);
        a1.StoreUnsafe(ref l, 16);
        a2.StoreUnsafe(ref l, 32);
        a3.StoreUnsafe(ref l, 48);
        a4.StoreUnsafe(ref l, 64);
        a5.StoreUnsafe(ref l, 80);
        a6.StoreUnsafe(ref l, 96);
        a7.StoreUnsafe(ref l, 112);
    }

    /// <summary>
    /// <see cref="Vector512Panel"/> for two tokens: each step's weights are converted once and feed both tokens' eight
    /// accumulators (the same fused multiply-adds in the same order per token, so the same bits).
    /// </summary>
    private static unsafe void Vector512PanelTwoTokens(ref sbyte w, int steps, float* x0, float* x1, Span<float> lanes)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default, b6 = default, b7 = default;
        for (int s = 0; s < steps; s++)
        {
            Vector512<float> p = Avx512F.BroadcastVector128ToVector512(x0 + (s * PackedInt8Weight.StepFeatures));
            Vector512<float> q = Avx512F.BroadcastVector128ToVector512(x1 + (s * PackedInt8Weight.StepFeatures));
            Vector512<float> w0 = Widen16(ref w, 0);
            a0 = Vector512.FusedMultiplyAdd(w0, p, a0);
            b0 = Vector512.FusedMultiplyAdd(w0, q, b0);
            Vector512<float> w1 = Widen16(ref w, 16);
            a1 = Vector512.FusedMultiplyAdd(w1, p, a1);
            b1 = Vector512.FusedMultiplyAdd(w1, q, b1);
            Vector512<float> w2 = Widen16(ref w, 32);
            a2 = Vector512.FusedMultiplyAdd(w2, p, a2);
            b2 = Vector512.FusedMultiplyAdd(w2, q, b2);
            Vector512<float> w3 = Widen16(ref w, 48);
            a3 = Vector512.FusedMultiplyAdd(w3, p, a3);
            b3 = Vector512.FusedMultiplyAdd(w3, q, b3);
            Vector512<float> w4 = Widen16(ref w, 64);
            a4 = Vector512.FusedMultiplyAdd(w4, p, a4);
            b4 = Vector512.FusedMultiplyAdd(w4, q, b4);
            Vector512<float> w5 = Widen16(ref w, 80);
            a5 = Vector512.FusedMultiplyAdd(w5, p, a5);
            b5 = Vector512.FusedMultiplyAdd(w5, q, b5);
            Vector512<float> w6 = Widen16(ref w, 96);
            a6 = Vector512.FusedMultiplyAdd(w6, p, a6);
            b6 = Vector512.FusedMultiplyAdd(w6, q, b6);
            Vector512<float> w7 = Widen16(ref w, 112);
            a7 = Vector512.FusedMultiplyAdd(w7, p, a7);
            b7 = Vector512.FusedMultiplyAdd(w7, q, b7);
            w = ref Unsafe.Add(ref w, PackedInt8Weight.StepBytes);
        }

        ref float l = ref MemoryMarshal.GetReference(lanes);
        a0.StoreUnsafe(ref l, 0);
        a1.StoreUnsafe(ref l, 16);
        a2.StoreUnsafe(ref l, 32);
        a3.StoreUnsafe(ref l, 48);
        a4.StoreUnsafe(ref l, 64);
        a5.StoreUnsafe(ref l, 80);
        a6.StoreUnsafe(ref l, 96);
        a7.StoreUnsafe(ref l, 112);
        b0.StoreUnsafe(ref l, Lanes);
        b1.StoreUnsafe(ref l, Lanes + 16);
        b2.StoreUnsafe(ref l, Lanes + 32);
        b3.StoreUnsafe(ref l, Lanes + 48);
        b4.StoreUnsafe(ref l, Lanes + 64);
        b5.StoreUnsafe(ref l, Lanes + 80);
        b6.StoreUnsafe(ref l, Lanes + 96);
        b7.StoreUnsafe(ref l, Lanes + 112);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Widen8(ref sbyte w, int offset) =>
        Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<long>(ref Unsafe.As<sbyte, byte>(ref Unsafe.Add(ref w, offset)))).AsSByte()));

    /// <summary>Eight accumulators of 2 channels x 4 features: two passes of 16 channels per panel.</summary>
    private static unsafe void Vector256Panel(ref sbyte w, int steps, float* x, Span<float> lanes)
    {
        const int ChannelsPerPass = 16;
        for (int first = 0; first < PackedInt8Weight.PanelRows; first += ChannelsPerPass)
        {
            ref sbyte wp = ref Unsafe.Add(ref w, first * PackedInt8Weight.StepFeatures);
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            for (int s = 0; s < steps; s++)
            {
                Vector256<float> p = Avx.BroadcastVector128ToVector256(x + (s * PackedInt8Weight.StepFeatures));
                a0 = Vector256.FusedMultiplyAdd(Widen8(ref wp, 0), p, a0);
                a1 = Vector256.FusedMultiplyAdd(Widen8(ref wp, 8), p, a1);
                a2 = Vector256.FusedMultiplyAdd(Widen8(ref wp, 16), p, a2);
                a3 = Vector256.FusedMultiplyAdd(Widen8(ref wp, 24), p, a3);
                a4 = Vector256.FusedMultiplyAdd(Widen8(ref wp, 32), p, a4);
                a5 = Vector256.FusedMultiplyAdd(Widen8(ref wp, 40), p, a5);
                a6 = Vector256.FusedMultiplyAdd(Widen8(ref wp, 48), p, a6);
                a7 = Vector256.FusedMultiplyAdd(Widen8(ref wp, 56), p, a7);
                wp = ref Unsafe.Add(ref wp, PackedInt8Weight.StepBytes);
            }

            ref float l = ref Unsafe.Add(ref MemoryMarshal.GetReference(lanes), first * PackedInt8Weight.StepFeatures);
            a0.StoreUnsafe(ref l, 0);
            a1.StoreUnsafe(ref l, 8);
            a2.StoreUnsafe(ref l, 16);
            a3.StoreUnsafe(ref l, 24);
            a4.StoreUnsafe(ref l, 32);
            a5.StoreUnsafe(ref l, 40);
            a6.StoreUnsafe(ref l, 48);
            a7.StoreUnsafe(ref l, 56);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Widen4(ref sbyte w, int offset) =>
        Vector128.ConvertToSingle(Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<int>(ref Unsafe.As<sbyte, byte>(ref Unsafe.Add(ref w, offset)))).AsSByte())));

    /// <summary>Portable: eight accumulators of 1 channel x 4 features, four passes of 8 channels per panel.</summary>
    private static unsafe void Vector128Panel(ref sbyte w, int steps, float* x, Span<float> lanes)
    {
        const int ChannelsPerPass = 8;
        for (int first = 0; first < PackedInt8Weight.PanelRows; first += ChannelsPerPass)
        {
            ref sbyte wp = ref Unsafe.Add(ref w, first * PackedInt8Weight.StepFeatures);
            Vector128<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            for (int s = 0; s < steps; s++)
            {
                Vector128<float> p = Vector128.Load(x + (s * PackedInt8Weight.StepFeatures));
                a0 = Vector128.FusedMultiplyAdd(Widen4(ref wp, 0), p, a0);
                a1 = Vector128.FusedMultiplyAdd(Widen4(ref wp, 4), p, a1);
                a2 = Vector128.FusedMultiplyAdd(Widen4(ref wp, 8), p, a2);
                a3 = Vector128.FusedMultiplyAdd(Widen4(ref wp, 12), p, a3);
                a4 = Vector128.FusedMultiplyAdd(Widen4(ref wp, 16), p, a4);
                a5 = Vector128.FusedMultiplyAdd(Widen4(ref wp, 20), p, a5);
                a6 = Vector128.FusedMultiplyAdd(Widen4(ref wp, 24), p, a6);
                a7 = Vector128.FusedMultiplyAdd(Widen4(ref wp, 28), p, a7);
                wp = ref Unsafe.Add(ref wp, PackedInt8Weight.StepBytes);
            }

            ref float l = ref Unsafe.Add(ref MemoryMarshal.GetReference(lanes), first * PackedInt8Weight.StepFeatures);
            a0.StoreUnsafe(ref l, 0);
            a1.StoreUnsafe(ref l, 4);
            a2.StoreUnsafe(ref l, 8);
            a3.StoreUnsafe(ref l, 12);
            a4.StoreUnsafe(ref l, 16);
            a5.StoreUnsafe(ref l, 20);
            a6.StoreUnsafe(ref l, 24);
            a7.StoreUnsafe(ref l, 28);
        }
    }

    private static unsafe void ScalarPanel(ref sbyte w, int steps, float* x, Span<float> lanes)
    {
        lanes.Clear();
        for (int s = 0; s < steps; s++)
        {
            for (int lane = 0; lane < Lanes; lane++)
            {
                float xv = x[(s * PackedInt8Weight.StepFeatures) + (lane % PackedInt8Weight.StepFeatures)];
                lanes[lane] = MathF.FusedMultiplyAdd(Unsafe.Add(ref w, lane), xv, lanes[lane]);
            }

            w = ref Unsafe.Add(ref w, PackedInt8Weight.StepBytes);
        }
    }
}
