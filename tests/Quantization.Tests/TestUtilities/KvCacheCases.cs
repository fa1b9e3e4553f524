using CsCheck;

namespace Quantization.Tests.TestUtilities;

/// <summary>Generators and helpers for KV cache tests: cache shapes for every scheme and K/V data with outlier channels.</summary>
internal static class KvCacheCases
{
    /// <summary>
    /// Small cache shapes that cross the kernels' vector widths: head dims around 8, 16, 32 and odd ones, query-head
    /// groups of 1 to 5 (the kernels take heads in fours), blocks of a few tokens, each scheme.
    /// </summary>
    public static readonly Gen<KvCacheOptions> Options =
        Gen.Select(Gen.Int[1, 3], Gen.Int[1, 5], Gen.OneOf(1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 128), Gen.Int[0, 3], Gen.OneOf(1, 2, 4, 8), Gen.Int[1, 3])
            .Select(t =>
            {
                (int kvHeads, int group, int headDim, int kind, int groupSize, int blockGroups) = t;
                int layers = 2;
                KvCacheScheme scheme = kind switch
                {
                    0 => KvCacheScheme.DynamicPerTokenHead,
                    1 => StaticScheme(layers, kvHeads, headDim, seed: (uint)(kvHeads * 1000 + headDim)),
                    3 => KvCacheScheme.StaticKeysPerChannel(StaticScheme(layers, kvHeads, headDim, seed: (uint)(kvHeads * 1000 + headDim)).KeyScales),
                    _ => KvCacheScheme.Kivi(groupSize, groupSize * 2),
                };
                return new KvCacheOptions(layers, kvHeads, kvHeads * group, headDim, maxTokens: 200, scheme, blockTokens: groupSize * blockGroups * 2);
            });

    /// <summary>Static scales near the spread of <see cref="Data"/> (some values saturate).</summary>
    public static KvCacheScheme StaticScheme(int layers, int kvHeads, int headDim, uint seed)
    {
        Random random = new((int)seed);
        float[] keys = [.. Enumerable.Range(0, layers * kvHeads * headDim).Select(_ => (float)(0.01 + (random.NextDouble() * 0.03)))];
        float[] values = [.. Enumerable.Range(0, layers * kvHeads * headDim).Select(_ => (float)(0.01 + (random.NextDouble() * 0.03)))];
        return KvCacheScheme.StaticPerChannel(keys, values);
    }

    /// <summary>K/V-like data: normal values with a few outlier channels (as real keys have), [tokens, KV heads, head dim].</summary>
    public static float[] Data(int tokens, KvCacheOptions options, int seed)
    {
        Random random = new(seed);
        float[] data = new float[tokens * options.TokenWidth];
        for (int i = 0; i < data.Length; i++)
        {
            int channel = i % options.HeadDim;
            double gaussian = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
            data[i] = (float)(gaussian * (channel % 7 == 3 ? 8 : 1));
        }

        return data;
    }

    /// <summary>A query, [query heads, head dim].</summary>
    public static float[] Query(KvCacheOptions options, int seed)
    {
        Random random = new(seed);
        return [.. Enumerable.Range(0, options.QueryHeads * options.HeadDim).Select(_ => (float)((random.NextDouble() * 4) - 2))];
    }

    /// <summary>
    /// Asserts |actual - expected| &lt;= tolerance * m for every element, where m is its query head's weighted-sum size
    /// <c>max_d sum_t p_t |v_t[d]|</c>: relative error measured against the scale that rounding errors grow with (an
    /// output that nearly cancels to zero has no relative precision to keep).
    /// </summary>
    public static void AssertClose(ReadOnlySpan<float> actual, (double[] Output, double[] Magnitudes) reference, int headDim, double tolerance, string context)
    {
        double[] expected = reference.Output;
        for (int head = 0; head < expected.Length / headDim; head++)
        {
            double scale = Math.Max(reference.Magnitudes[head], 1e-30);
            for (int d = 0; d < headDim; d++)
            {
                int i = (head * headDim) + d;
                double error = Math.Abs(actual[i] - expected[i]);
                Assert.True(error <= tolerance * scale, $"{context}: query head {head}, d {d}: {actual[i]:R} vs {expected[i]:R} (relative error {error / scale:E2})");
            }
        }
    }
}
