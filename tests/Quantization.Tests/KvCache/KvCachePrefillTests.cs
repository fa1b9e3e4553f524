using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.KvCache;

/// <summary>
/// The prefill path (<c>Attend(layer, queries, output, tokens)</c>) against token-by-token decoding, and the threaded path
/// against one thread: both must give the same bits (KIVI: see <see cref="Int8Prefill_Kivi_IsTokenByTokenWithoutAFlushAndTheFinalStateAcrossOne"/>).
/// </summary>
public class KvCachePrefillTests
{
    private static readonly Gen<(KvCacheOptions Options, int Before, int Tokens, int Seed)> Cases =
        Gen.Select(KvCacheCases.Options, Gen.Int[0, 40], Gen.Int[1, 70], Gen.Int[0, 1000]);

    [Fact]
    public void Int8Prefill_DynamicAndStatic_HasTheBitsOfTokenByTokenAttention()
    {
        Cases.Where(c => c.Options.Scheme.Kind != KvCacheSchemeKind.Kivi).Sample(c =>
        {
            (KvCacheOptions options, int before, int tokens, int seed) = c;
            using Int8KvCache stepped = new(options), block = new(options);
            float[] expected = Stepped(options, before, tokens, seed, stepped.Append, stepped.Append, stepped.Attend);
            float[] actual = Prefill(options, before, tokens, seed, block.Append, (q, o) => block.Attend(1, q, o, tokens));
            AssertSameBits(expected, actual, $"{options.Scheme}, {before}+{tokens} tokens");
        }, iter: 40);
    }

    [Fact]
    public void FloatPrefill_HasTheBitsOfTokenByTokenAttention()
    {
        Cases.Sample(c =>
        {
            (KvCacheOptions options, int before, int tokens, int seed) = c;
            FloatKvCache stepped = new(options), block = new(options);
            float[] expected = Stepped(options, before, tokens, seed, stepped.Append, stepped.Append, stepped.Attend);
            float[] actual = Prefill(options, before, tokens, seed, block.Append, (q, o) => block.Attend(1, q, o, tokens));
            AssertSameBits(expected, actual, $"fp32, {before}+{tokens} tokens");
        }, iter: 40);
    }

    [Fact]
    public void Int8Prefill_Kivi_IsTokenByTokenWithoutAFlushAndTheFinalStateAcrossOne()
    {
        // Token-by-token decoding attends each token while the newest ones are still in the float window; a prefill
        // after the appends sees the state at its end, where a window that filled meanwhile is int8. Then the two differ
        // by the int8 rounding of those tokens (KIVI's own error); without a flush they are the same computation, and
        // with one the prefill is the attention of the final state.
        Cases.Where(c => c.Options.Scheme.Kind == KvCacheSchemeKind.Kivi).Sample(c =>
        {
            (KvCacheOptions options, int before, int tokens, int seed) = c;
            using Int8KvCache stepped = new(options), block = new(options);
            float[] expected = Stepped(options, before, tokens, seed, stepped.Append, stepped.Append, stepped.Attend);
            float[] actual = Prefill(options, before, tokens, seed, block.Append, (q, o) => block.Attend(1, q, o, tokens));
            int window = options.Scheme.ResidentTokens;
            if (before / window == (before + tokens) / window)
            {
                AssertSameBits(expected, actual, $"{options.Scheme}, {before}+{tokens} tokens");
                return;
            }

            // Across a flush, the last token sees every token, as a decode step on the final state does.
            int row = options.QueryHeads * options.HeadDim;
            float[] last = new float[row];
            block.Attend(1, Queries(options, tokens, seed).AsSpan((tokens - 1) * row), last);
            AssertSameBits(last, actual[((tokens - 1) * row)..], $"{options.Scheme}, {before}+{tokens} tokens, last token");
        }, iter: 40);
    }

    [Fact]
    public void Attend_OnSeveralThreads_HasTheBitsOfOneThread()
    {
        Gen.Select(Cases, Gen.Int[2, 9]).Sample(t =>
        {
            ((KvCacheOptions options, int before, int tokens, int seed), int threads) = t;
            using Int8KvCache cache = new(options);
            FloatKvCache floats = new(options);
            float[] keys = KvCacheCases.Data(before + tokens, options, seed), values = KvCacheCases.Data(before + tokens, options, seed + 1);
            cache.Append(1, keys, values, before + tokens);
            floats.Append(1, keys, values, before + tokens);
            float[] queries = Queries(options, tokens, seed);
            float[] one = new float[queries.Length], many = new float[queries.Length];
            cache.Attend(1, queries, one, tokens, 1);
            cache.Attend(1, queries, many, tokens, threads);
            AssertSameBits(one, many, $"int8 {options.Scheme}, {threads} threads");
            floats.Attend(1, queries, one, tokens, 1);
            floats.Attend(1, queries, many, tokens, threads);
            AssertSameBits(one, many, $"fp32, {threads} threads");
        }, iter: 30);
    }

    [Fact]
    public void Attend_BadTokensThreadsOrQueries_Throws()
    {
        KvCacheOptions options = new(1, 2, 4, 8, 16);
        using Int8KvCache cache = new(options);
        FloatKvCache floats = new(options);
        float[] keys = new float[3 * 16], values = new float[3 * 16];
        cache.Append(0, keys, values, 3);
        floats.Append(0, keys, values, 3);
        foreach (Action<float[], float[], int, int> attend in new Action<float[], float[], int, int>[] { (q, o, n, th) => cache.Attend(0, q, o, n, th), (q, o, n, th) => floats.Attend(0, q, o, n, th) })
        {
            Assert.Equal("tokens", Assert.Throws<ArgumentOutOfRangeException>(() => attend([], [], 0, 1)).ParamName);
            Assert.Equal("tokens", Assert.Throws<ArgumentOutOfRangeException>(() => attend(new float[4 * 32], new float[4 * 32], 4, 1)).ParamName);
            Assert.Equal("threads", Assert.Throws<ArgumentOutOfRangeException>(() => attend(new float[2 * 32], new float[2 * 32], 2, 0)).ParamName);
            Assert.Equal("queries", Assert.Throws<ArgumentException>(() => attend(new float[32], new float[2 * 32], 2, 1)).ParamName);
            Assert.Equal("output", Assert.Throws<ArgumentException>(() => attend(new float[2 * 32], new float[32], 2, 1)).ParamName);
            float[] bad = new float[2 * 32];
            bad[40] = float.NaN;
            Assert.Equal(40, Assert.Throws<NonFiniteValueException>(() => attend(bad, new float[2 * 32], 2, 2)).Index);
        }
    }

    /// <summary>Appends <paramref name="before"/> tokens at once, then each token alone followed by its attention.</summary>
    private static float[] Stepped(KvCacheOptions options, int before, int tokens, int seed, Action<int, ReadOnlySpan<float>, ReadOnlySpan<float>, int> appendBlock, Action<int, ReadOnlySpan<float>, ReadOnlySpan<float>> append, AttendOne attend)
    {
        float[] keys = KvCacheCases.Data(before + tokens, options, seed), values = KvCacheCases.Data(before + tokens, options, seed + 1);
        float[] queries = Queries(options, tokens, seed);
        int width = options.TokenWidth, row = options.QueryHeads * options.HeadDim;
        if (before > 0)
        {
            appendBlock(1, keys.AsSpan(0, before * width), values.AsSpan(0, before * width), before);
        }

        float[] output = new float[queries.Length];
        for (int t = 0; t < tokens; t++)
        {
            append(1, keys.AsSpan((before + t) * width, width), values.AsSpan((before + t) * width, width));
            attend(1, queries.AsSpan(t * row, row), output.AsSpan(t * row, row));
        }

        return output;
    }

    /// <summary>Appends <paramref name="before"/> tokens, then the block's tokens at once, then attends the block.</summary>
    private static float[] Prefill(KvCacheOptions options, int before, int tokens, int seed, Action<int, ReadOnlySpan<float>, ReadOnlySpan<float>, int> appendBlock, Action<float[], float[]> attend)
    {
        float[] keys = KvCacheCases.Data(before + tokens, options, seed), values = KvCacheCases.Data(before + tokens, options, seed + 1);
        int width = options.TokenWidth;
        if (before > 0)
        {
            appendBlock(1, keys.AsSpan(0, before * width), values.AsSpan(0, before * width), before);
        }

        appendBlock(1, keys.AsSpan(before * width), values.AsSpan(before * width), tokens);
        float[] queries = Queries(options, tokens, seed), output = new float[queries.Length];
        attend(queries, output);
        return output;
    }

    private static float[] Queries(KvCacheOptions options, int tokens, int seed) =>
        [.. Enumerable.Range(0, tokens).SelectMany(t => KvCacheCases.Query(options, seed + (31 * t)))];

    private static void AssertSameBits(float[] expected, float[] actual, string context)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            // 0 and -0 compare equal: a weight of exactly 0 for a token a row does not see may turn an output of -0 into 0.
            Assert.True(expected[i] == actual[i], $"{context}, element {i}: {actual[i]:R} vs {expected[i]:R}");
        }
    }

    private delegate void AttendOne(int layer, ReadOnlySpan<float> query, Span<float> output);
}
