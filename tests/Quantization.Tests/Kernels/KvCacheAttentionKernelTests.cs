using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Kernels;

/// <summary>
/// Attention and quantized bytes of the KV caches against the scalar reference; CI reruns these on every SIMD tier, so
/// they also prove that every tier stores the same bytes and attends within 1e-5.
/// </summary>
public class KvCacheAttentionKernelTests
{
    [Fact]
    public void Int8Attend_AnyShapeSchemeAndLength_MatchesScalarReferenceWithin1e5()
    {
        Gen.Select(KvCacheCases.Options, Gen.Int[1, 120], Gen.Int[1, 30], Gen.Int[0, 1000]).Sample(t =>
        {
            (KvCacheOptions options, int prefill, int decode, int seed) = t;
            using Int8KvCache cache = new(options);
            KvCacheReference reference = new(options);
            AppendBoth(cache, reference, options, layer: 1, prefill, seed);
            for (int step = 0; step < decode; step++)
            {
                AppendBoth(cache, reference, options, layer: 1, tokens: 1, seed + 7 + step);
            }

            float[] query = KvCacheCases.Query(options, seed);
            float[] output = new float[query.Length];
            cache.Attend(1, query, output);
            KvCacheCases.AssertClose(output, reference.Attend(1, query), options.HeadDim, 1e-5, $"{options.Scheme}, {prefill}+{decode} tokens");
        }, iter: 60);
    }

    [Fact]
    public void Int8Attend_IsCloseToExactAttentionOnTheDequantizedData()
    {
        // The int16 query rounds each element by at most 1 / 65534 of the head's largest (scaled) element, about 1/250
        // of the int8 keys' own rounding; through sharp softmaxes over outlier channels that stays below 1e-3.
        Gen.Select(KvCacheCases.Options, Gen.Int[1, 150], Gen.Int[0, 1000]).Sample(t =>
        {
            (KvCacheOptions options, int tokens, int seed) = t;
            using Int8KvCache cache = new(options);
            KvCacheReference reference = new(options);
            AppendBoth(cache, reference, options, layer: 0, tokens, seed);
            float[] query = KvCacheCases.Query(options, seed + 1);
            float[] output = new float[query.Length];
            cache.Attend(0, query, output);
            KvCacheCases.AssertClose(output, reference.AttendDequantized(0, query), options.HeadDim, 1e-3, options.Scheme.ToString());
        }, iter: 40);
    }

    [Fact]
    public void Int8Cache_StoredBytesAndScales_MatchScalarReferenceExactly()
    {
        Gen.Select(KvCacheCases.Options, Gen.Int[1, 150], Gen.Int[0, 1000]).Sample(t =>
        {
            (KvCacheOptions options, int tokens, int seed) = t;
            using Int8KvCache cache = new(options);
            KvCacheReference reference = new(options);
            AppendBoth(cache, reference, options, layer: 0, tokens, seed);
            float[] actual = new float[tokens * options.HeadDim];
            for (int head = 0; head < options.KvHeads; head++)
            {
                for (int kind = 0; kind < 2; kind++)
                {
                    bool keys = kind == 0;
                    KvCacheReference.Stored expected = keys ? reference.Keys(0, head) : reference.Values(0, head);
                    if (keys)
                    {
                        cache.DequantizeKeys(0, head, actual);
                    }
                    else
                    {
                        cache.DequantizeValues(0, head, actual);
                    }

                    for (int i = 0; i < actual.Length; i++)
                    {
                        float value = expected.Value(i / options.HeadDim, i % options.HeadDim);
                        Assert.True(
                            BitConverter.SingleToInt32Bits(actual[i]) == BitConverter.SingleToInt32Bits(value),
                            $"{options.Scheme}, {(keys ? "keys" : "values")} head {head}, token {i / options.HeadDim}, d {i % options.HeadDim}: {actual[i]:R} vs {value:R}");
                    }
                }
            }
        }, iter: 60);
    }

    [Fact]
    public void FloatAttend_MatchesExactAttentionInDoubleWithin1e5()
    {
        Gen.Select(KvCacheCases.Options, Gen.Int[1, 150], Gen.Int[0, 1000]).Sample(t =>
        {
            (KvCacheOptions shape, int tokens, int seed) = t;
            KvCacheOptions options = new(shape.Layers, shape.KvHeads, shape.QueryHeads, shape.HeadDim, shape.MaxTokens);
            FloatKvCache cache = new(options);
            // A KIVI window as long as the cache keeps every token of the reference in float.
            KvCacheReference reference = new(new KvCacheOptions(options.Layers, options.KvHeads, options.QueryHeads, options.HeadDim, options.MaxTokens, KvCacheScheme.Kivi(1, options.MaxTokens)));
            float[] keys = KvCacheCases.Data(tokens, options, seed), values = KvCacheCases.Data(tokens, options, seed + 1);
            cache.Append(0, keys, values, tokens);
            reference.Append(0, keys, values, tokens);
            float[] query = KvCacheCases.Query(options, seed);
            float[] output = new float[query.Length];
            cache.Attend(0, query, output);
            KvCacheCases.AssertClose(output, reference.AttendDequantized(0, query), options.HeadDim, 1e-5, "fp32");
        }, iter: 40);
    }

    [Fact]
    public void Int8Attend_HugeScoresDoNotOverflowTheSoftmax()
    {
        KvCacheOptions options = new(1, 1, 4, 64, 16);
        using Int8KvCache cache = new(options);
        float[] keys = [.. Enumerable.Range(0, 64).Select(i => 1e4f * (i % 2 == 0 ? 1 : -1))];
        float[] opposite = [.. keys.Select(k => -k)];
        cache.Append(0, keys, keys);
        cache.Append(0, opposite, opposite);
        float[] query = [.. Enumerable.Range(0, 256).Select(i => 1e4f * (i % 2 == 0 ? 1 : -1))];
        float[] output = new float[256];
        cache.Attend(0, query, output);
        // Scores of about +-8e8: a softmax without the max subtraction overflows; with it, all weight goes to token 0.
        Assert.All(output, o => Assert.True(float.IsFinite(o)));
        Assert.Equal(1e4f, output[0], 1e4f * 1e-5f);
        Assert.Equal(-1e4f, output[1], 1e4f * 1e-5f);
    }

    [Fact]
    public void KeyScores_AnyPairsStrideHeadsAndTokens_MatchScalarReferenceBitForBit()
    {
        // Pair-layout keys [pairs, stride, 2] with stale bytes past the scored tokens, int16 queries of full range, and
        // optional per-token scales: every tier must give (float)exactDot * factor (* scale), the scalar reference.
        Gen.Select(Gen.Int[1, 70], Gen.Int[0, 45], Gen.Int[0, 5], Gen.Int[1, 9], Gen.Bool, Gen.Int[0, 1000]).Sample(t =>
        {
            (int pairs, int tokens, int spare, int heads, bool perToken, int seed) = t;
            int stride = tokens + spare;
            Random random = new(seed);
            sbyte[] keys = [.. Enumerable.Range(0, Math.Max(1, pairs * stride * 2)).Select(_ => (sbyte)random.Next(-128, 128))];
            short[] queries = [.. Enumerable.Range(0, heads * pairs * 2).Select(_ => (short)random.Next(-32767, 32768))];
            float[] factors = [.. Enumerable.Range(0, heads).Select(_ => (float)random.NextDouble() * 1e-4f)];
            float[] tokenScales = perToken ? [.. Enumerable.Range(0, tokens).Select(_ => (float)random.NextDouble())] : [];
            int scoreStride = tokens + 3;
            float[] scores = new float[heads * scoreStride];
            AttentionPrimitives.KeyScores(keys, stride, tokens, queries, factors, tokenScales, scores, scoreStride);
            for (int j = 0; j < heads; j++)
            {
                for (int token = 0; token < tokens; token++)
                {
                    long dot = 0;
                    for (int d = 0; d < pairs * 2; d++)
                    {
                        dot += keys[(((d / 2 * stride) + token) * 2) + (d & 1)] * (long)queries[(j * pairs * 2) + d];
                    }

                    float expected = (float)dot * factors[j];
                    expected = perToken ? expected * tokenScales[token] : expected;
                    Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(scores[(j * scoreStride) + token]));
                }
            }
        }, iter: 300);
    }

    [Fact]
    public void QuantizeQuery_MatchesScalarRoundHalfEvenAndPadsOddDims()
    {
        Gen.Select(Gen.Int[1, 200], Gen.Bool, Gen.Int[0, 1000]).Sample(t =>
        {
            (int dim, bool channels, int seed) = t;
            Random random = new(seed);
            float[] query = [.. Enumerable.Range(0, dim).Select(_ => (float)((random.NextDouble() * 6) - 3))];
            float[] scales = channels ? [.. Enumerable.Range(0, dim).Select(_ => (float)random.NextDouble())] : [];
            short[] actual = [.. Enumerable.Repeat((short)77, AttentionPrimitives.PaddedDim(dim))];
            float scale = AttentionPrimitives.QuantizeQuery(query, scales, new float[dim], actual);
            float[] x = [.. query.Select((q, d) => channels ? q * scales[d] : q)];
            float expectedScale = x.Max(MathF.Abs) / 32767f;
            Assert.Equal(expectedScale, scale);
            for (int d = 0; d < actual.Length; d++)
            {
                Assert.Equal(d < dim ? (short)MathF.Round(x[d] / expectedScale, MidpointRounding.ToEven) : (short)0, actual[d]);
            }
        }, iter: 200);
    }

    internal static void AppendBoth(Int8KvCache cache, KvCacheReference reference, KvCacheOptions options, int layer, int tokens, int seed)
    {
        float[] keys = KvCacheCases.Data(tokens, options, seed), values = KvCacheCases.Data(tokens, options, seed + 1);
        cache.Append(layer, keys, values, tokens);
        reference.Append(layer, keys, values, tokens);
    }
}
