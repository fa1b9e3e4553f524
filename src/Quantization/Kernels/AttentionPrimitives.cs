using System.Diagnostics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Quantization;

/// <summary>
/// The kernels of decode attention on a KV cache: dot products of one query token's heads with key rows
/// (<see cref="KeyScores"/>), the softmax, and the weighted sum of
/// value rows (<see cref="WeightedSum(ReadOnlySpan{sbyte}, int, ReadOnlySpan{float}, int, int, Span{float})"/>). Each kernel
/// serves all the query heads of a grouped-query-attention group in one pass over the keys or values they share.
/// </summary>
/// <remarks>
/// Int8 keys meet the query quantized to int16 (<see cref="QuantizeQuery"/>): the dots are exact int32 sums, the same on
/// every SIMD tier. The float steps (softmax, weighted sums) follow the scalar reference within float rounding.
/// Arguments are checked by the callers (the caches); the kernels only assert.
/// </remarks>
internal static partial class AttentionPrimitives
{
    /// <summary>The largest int16 magnitude a quantized query uses.</summary>
    public const int QueryLevels = short.MaxValue;

    /// <summary>
    /// The largest head dimension whose int8-by-int16 dots stay exact in int32: 128 * 32767 * 512 &lt; 2^31.
    /// </summary>
    public const int MaxHeadDim = 512;

    /// <summary>
    /// Quantizes one query head to int16, symmetric: <c>q16[d] = round_half_even(x[d] / s)</c> with
    /// <c>x[d] = query[d] * channelScales[d]</c> (or <c>query[d]</c> when there are no channel scales) and
    /// <c>s = max |x| / 32767</c>; an all-zero head gets s = 0 and zeros. An odd head dim is padded with one zero, so the
    /// destination holds whole channel pairs (<see cref="KeyScores"/>).
    /// </summary>
    /// <remarks>
    /// Every step is an exactly rounded IEEE operation (multiply, divide, round to integer), so the vector and scalar
    /// paths give the same int16 values. |x / s| stays within 32767 plus the scale's rounding (far below 0.5), so no
    /// clamp is needed.
    /// </remarks>
    /// <returns>The scale s: a dot with the int16 query times s is the dot with x.</returns>
    public static float QuantizeQuery(ReadOnlySpan<float> query, ReadOnlySpan<float> channelScales, Span<float> scratch, Span<short> destination)
    {
        Debug.Assert(destination.Length == PaddedDim(query.Length) && scratch.Length >= query.Length, "One value per element, padded to pairs.");
        Debug.Assert(channelScales.IsEmpty || channelScales.Length == query.Length, "One channel scale per element.");
        ReadOnlySpan<float> x = query;
        if (!channelScales.IsEmpty)
        {
            TensorPrimitives.Multiply(query, channelScales, scratch);
            x = scratch[..query.Length];
        }

        destination[^1] = 0;
        float amax = MathF.Abs(TensorPrimitives.MaxMagnitude(x));
        if (amax == 0f)
        {
            destination.Clear();
            return 0f;
        }

        float scale = amax / QueryLevels;
        ref float source = ref MemoryMarshal.GetReference(x);
        ref short target = ref MemoryMarshal.GetReference(destination);
        nuint length = (nuint)x.Length, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> divisor = Vector256.Create(scale);
            for (; i + 16 <= length; i += 16)
            {
                Vector256<int> lower = Vector256.ConvertToInt32(Vector256.Round(Vector256.LoadUnsafe(ref source, i) / divisor));
                Vector256<int> upper = Vector256.ConvertToInt32(Vector256.Round(Vector256.LoadUnsafe(ref source, i + 8) / divisor));
                Vector256.Narrow(lower, upper).StoreUnsafe(ref target, i);
            }
        }

        if (Vector128.IsHardwareAccelerated)
        {
            Vector128<float> divisor = Vector128.Create(scale);
            for (; i + 8 <= length; i += 8)
            {
                Vector128<int> lower = Vector128.ConvertToInt32(Vector128.Round(Vector128.LoadUnsafe(ref source, i) / divisor));
                Vector128<int> upper = Vector128.ConvertToInt32(Vector128.Round(Vector128.LoadUnsafe(ref source, i + 4) / divisor));
                Vector128.Narrow(lower, upper).StoreUnsafe(ref target, i);
            }
        }

        for (; i < length; i++)
        {
            Unsafe.Add(ref target, i) = (short)MathF.Round(Unsafe.Add(ref source, i) / scale);
        }

        return scale;
    }

    /// <summary>The head dim rounded up to whole channel pairs: the length of a quantized query and of a pair-layout key row.</summary>
    public static int PaddedDim(int headDim) => headDim + (headDim & 1);

    /// <summary>
    /// Turns scores into softmax probabilities in place: <c>p[t] = exp(s[t] - max s) / sum</c>, subtracting the maximum so
    /// that no exponential overflows.
    /// </summary>
    public static void Softmax(Span<float> scores)
    {
        Debug.Assert(!scores.IsEmpty, "A softmax needs at least one score.");
        float max = TensorPrimitives.Max(scores);
        TensorPrimitives.Subtract(scores, max, scores);
        TensorPrimitives.Exp(scores, scores);
        TensorPrimitives.Multiply(scores, 1f / Sum(scores), scores);
    }

    /// <summary>
    /// The causal softmax of a block of query rows, [rows, stride] with <paramref name="group"/> rows per query token:
    /// row r (token t = r / group) takes the softmax of its first <c>before + t + 1</c> scores, and the scores past them
    /// become 0, so that a weighted sum over the whole stride adds nothing for the tokens the row does not see.
    /// </summary>
    public static void CausalSoftmax(Span<float> scores, int stride, int group, int before)
    {
        Debug.Assert(scores.Length % stride == 0 && (scores.Length / stride) % group == 0, "Whole rows of whole tokens.");
        int rows = scores.Length / stride;
        for (int r = 0; r < rows; r++)
        {
            int seen = before + (r / group) + 1;
            Debug.Assert(seen <= stride, "A row sees at most the scored tokens.");
            Softmax(scores.Slice(r * stride, seen));
            scores.Slice((r * stride) + seen, stride - seen).Clear();
        }
    }

    /// <summary>
    /// Sums in a fixed order that depends only on the length (eight lanes in index order, then the rest), not on where
    /// the data lies: a row's softmax has the same bits in any buffer, on any thread, alone or in a prefill block.
    /// </summary>
    private static float Sum(ReadOnlySpan<float> values)
    {
        ref float source = ref MemoryMarshal.GetReference(values);
        nuint length = (nuint)values.Length, i = 0;
        float sum = 0f;
        if (Vector256.IsHardwareAccelerated && length >= 8)
        {
            Vector256<float> lanes = Vector256<float>.Zero;
            for (; i + 8 <= length; i += 8)
            {
                lanes += Vector256.LoadUnsafe(ref source, i);
            }

            sum = Vector256.Sum(lanes);
        }

        for (; i < length; i++)
        {
            sum += Unsafe.Add(ref source, i);
        }

        return sum;
    }

    /// <summary>
    /// Asks for every cache line of <paramref name="data"/> (x86; elsewhere nothing). Attention walks a cache block by
    /// block, and each KV head's rows of a block are a few KiB at an unrelated address that the hardware prefetchers do
    /// not guess; asking for the next block while this one is computed keeps memory busy. Prefetches never fault, and a
    /// stale address after a GC move only wastes them.
    /// </summary>
    public static unsafe void Prefetch<T>(ReadOnlySpan<T> data)
        where T : unmanaged
    {
        if (!Sse.IsSupported)
        {
            return;
        }

        byte* start = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(data));
        nuint bytes = (nuint)data.Length * (nuint)sizeof(T);
        for (nuint i = 0; i < bytes; i += 64)
        {
            Sse.Prefetch0(start + i);
        }
    }

}
