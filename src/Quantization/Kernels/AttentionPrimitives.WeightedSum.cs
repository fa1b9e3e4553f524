using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Quantization;

internal static partial class AttentionPrimitives
{
    /// <summary>
    /// The tokens a weighted sum takes per tile: each column strip of the output runs over one tile, so the tile's rows
    /// (4 KiB of int8 or 16 KiB of float values at head dim 128) stay in L1 while the strips sweep across them.
    /// </summary>
    private const int TileTokens = 32;

    /// <summary>Adds weighted int8 value rows into the outputs of query heads: <c>output[j, d] += sum_t weights[j * weightStride + t] * values[t, d]</c>.</summary>
    /// <param name="values">The value rows, [tokens, headDim].</param>
    /// <param name="headDim">The head dimension.</param>
    /// <param name="weights">The weight of each head and token (scales already folded in).</param>
    /// <param name="weightStride">The distance between two heads' weights.</param>
    /// <param name="heads">The query heads that share the values.</param>
    /// <param name="output">The heads' outputs, [heads, headDim], added to.</param>
    public static void WeightedSum(ReadOnlySpan<sbyte> values, int headDim, ReadOnlySpan<float> weights, int weightStride, int heads, Span<float> output)
    {
        if (Int8WeightedSum512.IsSupported && headDim >= Int8WeightedSum512.Count)
        {
            WeightedSum<sbyte, Vector512<float>, Int8WeightedSum512, Int8WeightedSumScalar>(values, headDim, weights, weightStride, heads, output);
        }
        else if (Int8WeightedSum256.IsSupported && headDim >= Int8WeightedSum256.Count)
        {
            WeightedSum<sbyte, Vector256<float>, Int8WeightedSum256, Int8WeightedSumScalar>(values, headDim, weights, weightStride, heads, output);
        }
        else if (Int8WeightedSum128.IsSupported && headDim >= Int8WeightedSum128.Count)
        {
            WeightedSum<sbyte, Vector128<float>, Int8WeightedSum128, Int8WeightedSumScalar>(values, headDim, weights, weightStride, heads, output);
        }
        else
        {
            WeightedSum<sbyte, float, Int8WeightedSumScalar, Int8WeightedSumScalar>(values, headDim, weights, weightStride, heads, output);
        }
    }

    /// <summary>Adds weighted float value rows into the outputs of query heads (the fp32 cache's attention).</summary>
    /// <param name="values">The value rows, [tokens, headDim].</param>
    /// <param name="headDim">The head dimension.</param>
    /// <param name="weights">The weight of each head and token.</param>
    /// <param name="weightStride">The distance between two heads' weights.</param>
    /// <param name="heads">The query heads that share the values.</param>
    /// <param name="output">The heads' outputs, [heads, headDim], added to.</param>
    public static void WeightedSum(ReadOnlySpan<float> values, int headDim, ReadOnlySpan<float> weights, int weightStride, int heads, Span<float> output)
    {
        if (FloatWeightedSum512.IsSupported && headDim >= FloatWeightedSum512.Count)
        {
            WeightedSum<float, Vector512<float>, FloatWeightedSum512, FloatWeightedSumScalar>(values, headDim, weights, weightStride, heads, output);
        }
        else if (FloatWeightedSum256.IsSupported && headDim >= FloatWeightedSum256.Count)
        {
            WeightedSum<float, Vector256<float>, FloatWeightedSum256, FloatWeightedSumScalar>(values, headDim, weights, weightStride, heads, output);
        }
        else if (FloatWeightedSum128.IsSupported && headDim >= FloatWeightedSum128.Count)
        {
            WeightedSum<float, Vector128<float>, FloatWeightedSum128, FloatWeightedSumScalar>(values, headDim, weights, weightStride, heads, output);
        }
        else
        {
            WeightedSum<float, float, FloatWeightedSumScalar, FloatWeightedSumScalar>(values, headDim, weights, weightStride, heads, output);
        }
    }

    /// <summary>
    /// The weighted-sum driver: tiles of <see cref="TileTokens"/> rows; in each tile, column strips of the output held in
    /// registers for four heads at a time (one widening of a value strip serves four heads), then one head at a time.
    /// The columns past the last full step go through <typeparamref name="TTail"/>.
    /// </summary>
    private static void WeightedSum<TValue, TVector, TOp, TTail>(ReadOnlySpan<TValue> values, int headDim, ReadOnlySpan<float> weights, int weightStride, int heads, Span<float> output)
        where TOp : IWeightedSumOperator<TValue, TVector>
        where TTail : IWeightedSumOperator<TValue, float>
    {
        int tokens = values.Length / headDim;
        Debug.Assert(values.Length == tokens * headDim && output.Length >= heads * headDim, "Whole rows.");
        Debug.Assert(heads == 0 || weights.Length >= ((heads - 1) * weightStride) + tokens, "A weight for every head and token.");
        nuint dim = (nuint)headDim;
        nuint vectorEnd = dim - (dim % (nuint)TOp.Count);
        ref TValue value0 = ref MemoryMarshal.GetReference(values);
        ref float weight0 = ref MemoryMarshal.GetReference(weights);
        ref float output0 = ref MemoryMarshal.GetReference(output);
        for (int first = 0; first < tokens; first += TileTokens)
        {
            int count = Math.Min(TileTokens, tokens - first);
            ref TValue tile = ref Unsafe.Add(ref value0, (nuint)first * dim);
            int j = 0;
            for (; j + 4 <= heads; j += 4)
            {
                ref float w = ref Unsafe.Add(ref weight0, (nuint)((j * weightStride) + first));
                ref float o = ref Unsafe.Add(ref output0, (nuint)j * dim);
                Strips4<TValue, TVector, TOp>(ref tile, count, dim, ref w, (nuint)weightStride, ref o, 0, vectorEnd);
                Strips4<TValue, float, TTail>(ref tile, count, dim, ref w, (nuint)weightStride, ref o, vectorEnd, dim);
            }

            for (; j < heads; j++)
            {
                ref float w = ref Unsafe.Add(ref weight0, (nuint)((j * weightStride) + first));
                ref float o = ref Unsafe.Add(ref output0, (nuint)j * dim);
                Strips1<TValue, TVector, TOp>(ref tile, count, dim, ref w, ref o, 0, vectorEnd);
                Strips1<TValue, float, TTail>(ref tile, count, dim, ref w, ref o, vectorEnd, dim);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Strips4<TValue, TVector, TOp>(ref TValue tile, int count, nuint dim, ref float w, nuint stride, ref float o, nuint start, nuint end)
        where TOp : IWeightedSumOperator<TValue, TVector>
    {
        ref float wb = ref Unsafe.Add(ref w, stride);
        ref float wc = ref Unsafe.Add(ref wb, stride);
        ref float wd = ref Unsafe.Add(ref wc, stride);
        nuint i = start, width = (nuint)TOp.Count;

        // Two strips at once: eight independent multiply-add chains keep both FMA pipes busy, where four chains wait on
        // the FMA latency. Each output element still sums its tokens in the same order, so the bits do not change.
        for (; i + (2 * width) <= end; i += 2 * width)
        {
            nuint k = i + width;
            TVector a = TOp.Load(ref o, i), b = TOp.Load(ref o, dim + i), c = TOp.Load(ref o, (2 * dim) + i), d = TOp.Load(ref o, (3 * dim) + i);
            TVector e = TOp.Load(ref o, k), f = TOp.Load(ref o, dim + k), g = TOp.Load(ref o, (2 * dim) + k), h = TOp.Load(ref o, (3 * dim) + k);
            for (nuint t = 0; t < (nuint)count; t++)
            {
                TVector x = TOp.Widen(ref tile, (t * dim) + i), y = TOp.Widen(ref tile, (t * dim) + k);

                // Each weight read from memory per use: the broadcast then folds into the multiply-add (a load),
                // where a weight held in a register takes a shuffle to broadcast.
                a = TOp.MultiplyAdd(a, x, Unsafe.Add(ref w, t));
                b = TOp.MultiplyAdd(b, x, Unsafe.Add(ref wb, t));
                c = TOp.MultiplyAdd(c, x, Unsafe.Add(ref wc, t));
                d = TOp.MultiplyAdd(d, x, Unsafe.Add(ref wd, t));
                e = TOp.MultiplyAdd(e, y, Unsafe.Add(ref w, t));
                f = TOp.MultiplyAdd(f, y, Unsafe.Add(ref wb, t));
                g = TOp.MultiplyAdd(g, y, Unsafe.Add(ref wc, t));
                h = TOp.MultiplyAdd(h, y, Unsafe.Add(ref wd, t));
            }

            TOp.Store(a, ref o, i);
            TOp.Store(b, ref o, dim + i);
            TOp.Store(c, ref o, (2 * dim) + i);
            TOp.Store(d, ref o, (3 * dim) + i);
            TOp.Store(e, ref o, k);
            TOp.Store(f, ref o, dim + k);
            TOp.Store(g, ref o, (2 * dim) + k);
            TOp.Store(h, ref o, (3 * dim) + k);
        }

        for (; i < end; i += width)
        {
            TVector a = TOp.Load(ref o, i), b = TOp.Load(ref o, dim + i), c = TOp.Load(ref o, (2 * dim) + i), d = TOp.Load(ref o, (3 * dim) + i);
            for (nuint t = 0; t < (nuint)count; t++)
            {
                TVector x = TOp.Widen(ref tile, (t * dim) + i);
                a = TOp.MultiplyAdd(a, x, Unsafe.Add(ref w, t));
                b = TOp.MultiplyAdd(b, x, Unsafe.Add(ref wb, t));
                c = TOp.MultiplyAdd(c, x, Unsafe.Add(ref wc, t));
                d = TOp.MultiplyAdd(d, x, Unsafe.Add(ref wd, t));
            }

            TOp.Store(a, ref o, i);
            TOp.Store(b, ref o, dim + i);
            TOp.Store(c, ref o, (2 * dim) + i);
            TOp.Store(d, ref o, (3 * dim) + i);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Strips1<TValue, TVector, TOp>(ref TValue tile, int count, nuint dim, ref float w, ref float o, nuint start, nuint end)
        where TOp : IWeightedSumOperator<TValue, TVector>
    {
        for (nuint i = start; i < end; i += (nuint)TOp.Count)
        {
            TVector a = TOp.Load(ref o, i);
            for (nuint t = 0; t < (nuint)count; t++)
            {
                a = TOp.MultiplyAdd(a, TOp.Widen(ref tile, (t * dim) + i), Unsafe.Add(ref w, t));
            }

            TOp.Store(a, ref o, i);
        }
    }
}
