using Quantization.Tests.Kernels;
using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.KvCache;

public class Int8KvCacheTests
{
    private static readonly KvCacheScheme[] Schemes = [KvCacheScheme.DynamicPerTokenHead, KvCacheCases.StaticScheme(2, 2, 32, 5), KvCacheScheme.Kivi(4, 8), KvCacheScheme.StaticKeysPerChannel(KvCacheCases.StaticScheme(2, 2, 32, 6).KeyScales)];

    public static TheoryData<int> SchemeIndices() => [0, 1, 2, 3];

    [Theory]
    [MemberData(nameof(SchemeIndices))]
    public void Append_PrefillBlockThenDecode_EqualsAppendingOneByOne(int scheme)
    {
        KvCacheOptions options = Options(Schemes[scheme]);
        using Int8KvCache block = new(options), single = new(options);
        float[] keys = KvCacheCases.Data(45, options, 1), values = KvCacheCases.Data(45, options, 2);
        block.Append(0, keys.AsSpan(0, 37 * options.TokenWidth), values.AsSpan(0, 37 * options.TokenWidth), 37);
        for (int t = 37; t < 45; t++)
        {
            block.Append(0, keys.AsSpan(t * options.TokenWidth, options.TokenWidth), values.AsSpan(t * options.TokenWidth, options.TokenWidth));
        }

        for (int t = 0; t < 45; t++)
        {
            single.Append(0, keys.AsSpan(t * options.TokenWidth, options.TokenWidth), values.AsSpan(t * options.TokenWidth, options.TokenWidth));
        }

        Assert.Equal(45, block.GetCount(0));
        AssertSameContents(block, single, options, layer: 0);
    }

    [Fact]
    public void Kivi_WindowStaysFloatUntilFull_ThenTheGroupIsQuantizedAtOnce()
    {
        KvCacheOptions options = Options(KvCacheScheme.Kivi(4, 8));
        using Int8KvCache cache = new(options);
        KvCacheReference reference = new(options);
        float[] keys = KvCacheCases.Data(8, options, 3), values = KvCacheCases.Data(8, options, 4);
        float[] stored = new float[8 * options.HeadDim];
        for (int t = 0; t < 7; t++)
        {
            cache.Append(0, keys.AsSpan(t * options.TokenWidth, options.TokenWidth), values.AsSpan(t * options.TokenWidth, options.TokenWidth));
        }

        // Seven tokens: all still in the float window, exactly as appended.
        cache.DequantizeKeys(0, 1, stored.AsSpan(0, 7 * options.HeadDim));
        for (int t = 0; t < 7; t++)
        {
            Assert.Equal(keys.AsSpan((t * options.TokenWidth) + options.HeadDim, options.HeadDim), stored.AsSpan(t * options.HeadDim, options.HeadDim));
        }

        // The eighth fills the window: all eight are quantized together, as if quantized in one go.
        cache.Append(0, keys.AsSpan(7 * options.TokenWidth), values.AsSpan(7 * options.TokenWidth));
        reference.Append(0, keys, values, 8);
        cache.DequantizeKeys(0, 1, stored);
        KvCacheReference.Stored expected = reference.Keys(0, 1);
        Assert.Equal(8, expected.QuantizedTokens);
        for (int i = 0; i < stored.Length; i++)
        {
            Assert.Equal(expected.Value(i / options.HeadDim, i % options.HeadDim), stored[i]);
        }
    }

    [Theory]
    [MemberData(nameof(SchemeIndices))]
    public void Append_Rejected_LeavesTheCacheAsItWas(int scheme)
    {
        KvCacheOptions options = Options(Schemes[scheme]);
        using Int8KvCache cache = new(options), clean = new(options);
        float[] keys = KvCacheCases.Data(20, options, 5), values = KvCacheCases.Data(20, options, 6);
        cache.Append(0, keys.AsSpan(0, 10 * options.TokenWidth), values.AsSpan(0, 10 * options.TokenWidth), 10);
        clean.Append(0, keys.AsSpan(0, 10 * options.TokenWidth), values.AsSpan(0, 10 * options.TokenWidth), 10);

        float[] bad = keys.AsSpan(10 * options.TokenWidth).ToArray();
        bad[(3 * options.TokenWidth) + 5] = float.NaN;
        NonFiniteValueException nan = Assert.Throws<NonFiniteValueException>(() => cache.Append(0, bad, values.AsSpan(10 * options.TokenWidth).ToArray(), 10));
        Assert.Equal("keys (layer 0)", nan.TensorName);
        Assert.Equal((3 * options.TokenWidth) + 5, nan.Index);
        Assert.Throws<NonFiniteValueException>(() => cache.Append(0, keys.AsSpan(10 * options.TokenWidth, options.TokenWidth), Enumerable.Repeat(float.PositiveInfinity, options.TokenWidth).ToArray()));
        Assert.Throws<ArgumentException>(() => cache.Append(0, keys.AsSpan(0, options.TokenWidth - 1), values.AsSpan(0, options.TokenWidth - 1)));
        Assert.Equal(10, cache.GetCount(0));

        cache.Append(0, keys.AsSpan(10 * options.TokenWidth), values.AsSpan(10 * options.TokenWidth), 10);
        clean.Append(0, keys.AsSpan(10 * options.TokenWidth), values.AsSpan(10 * options.TokenWidth), 10);
        AssertSameContents(cache, clean, options, layer: 0);
    }

    [Fact]
    public void Append_PastMaxTokens_IsRejectedAndTheCacheKeepsWorking()
    {
        KvCacheOptions options = new(1, 2, 4, 16, maxTokens: 5);
        using Int8KvCache cache = new(options);
        float[] keys = KvCacheCases.Data(6, options, 7);
        cache.Append(0, keys.AsSpan(0, 4 * options.TokenWidth), keys.AsSpan(0, 4 * options.TokenWidth), 4);
        ArgumentOutOfRangeException error = Assert.Throws<ArgumentOutOfRangeException>(() => cache.Append(0, keys.AsSpan(0, 2 * options.TokenWidth), keys.AsSpan(0, 2 * options.TokenWidth), 2));
        Assert.Contains("MaxTokens of 5", error.Message, StringComparison.Ordinal);
        Assert.Equal(4, cache.Count);
        cache.Append(0, keys.AsSpan(0, options.TokenWidth), keys.AsSpan(0, options.TokenWidth));
        Assert.Equal(5, cache.Count);
    }

    [Fact]
    public void BadShapes_AreRejectedWithMessagesThatNameTheProblem()
    {
        KvCacheOptions options = new(2, 2, 6, 16, 32);
        using Int8KvCache cache = new(options);
        float[] token = new float[options.TokenWidth];

        // Keys of three KV heads where the cache has two.
        ArgumentException heads = Assert.Throws<ArgumentException>(() => cache.Append(0, new float[3 * 16], token));
        Assert.Equal("keys", heads.ParamName);
        Assert.Contains("KV heads 2 x head dim 16", heads.Message, StringComparison.Ordinal);
        Assert.Equal("values", Assert.Throws<ArgumentException>(() => cache.Append(0, token, new float[2 * 15])).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Append(2, token, token));
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Append(0, token, token, 0));

        float[] query = new float[6 * 16], output = new float[6 * 16];
        Assert.Throws<InvalidOperationException>(() => cache.Attend(0, query, output));
        cache.Append(0, token, token);
        Assert.Equal("query", Assert.Throws<ArgumentException>(() => cache.Attend(0, new float[4 * 16], output)).ParamName);
        Assert.Equal("output", Assert.Throws<ArgumentException>(() => cache.Attend(0, query, new float[6 * 15])).ParamName);
        query[7] = float.NaN;
        Assert.Throws<NonFiniteValueException>(() => cache.Attend(0, query, output));
        Assert.Equal("destination", Assert.Throws<ArgumentException>(() => cache.DequantizeKeys(0, 0, new float[2 * 16])).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.DequantizeValues(0, 2, new float[16]));
    }

    [Fact]
    public void Options_RejectShapesThatDoNotFit()
    {
        Assert.Contains("multiple of the KV heads", Assert.Throws<ArgumentException>(() => new KvCacheOptions(1, 3, 8, 64, 16)).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new KvCacheOptions(1, 1, 1, 513, 16));
        Assert.Throws<ArgumentOutOfRangeException>(() => new KvCacheOptions(0, 1, 1, 64, 16));
        Assert.Contains("2 layers x 1 KV heads x 4 head dim = 8 channels", Assert.Throws<ArgumentException>(() => new KvCacheOptions(2, 1, 1, 4, 16, KvCacheScheme.StaticPerChannel([1f, 1f, 1f, 1f], [1f, 1f, 1f, 1f]))).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new KvCacheOptions(1, 1, 1, 4, 16, KvCacheScheme.Kivi(32, 128), blockTokens: 48));
        Assert.Throws<ArgumentOutOfRangeException>(() => KvCacheScheme.Kivi(32, 48));
        Assert.Throws<ArgumentOutOfRangeException>(() => KvCacheScheme.StaticPerChannel([1f, 0f], [1f, 1f]));
        Assert.Throws<ArgumentException>(() => KvCacheScheme.StaticPerChannel([1f], [1f, 1f]));
    }

    [Fact]
    public void StaticScheme_ValuesBeyondTheCalibratedRangeSaturate()
    {
        KvCacheOptions options = new(1, 1, 1, 4, 8, KvCacheScheme.StaticPerChannel([0.5f, 0.5f, 0.5f, 0.5f], [1f, 1f, 1f, 1f]));
        using Int8KvCache cache = new(options);
        cache.Append(0, [1000f, -1000f, 1f, -0.75f], [0f, 0f, 0f, 0f]);
        float[] keys = new float[4];
        cache.DequantizeKeys(0, 0, keys);
        Assert.Equal([63.5f, -64f, 1f, -1f], keys);
    }

    /// <summary>Int8 data is 0.25x; per-token scales add 8 / (8 headDim), KIVI's key group scales 4 / (8 G) per element.</summary>
    [Theory]
    [InlineData(128, 32)]
    [InlineData(64, 64)]
    public void BytesPerToken_IsAtMost027OfTheFloatCache(int headDim, int kiviGroup)
    {
        const double bound = 0.27;
        foreach (KvCacheScheme scheme in new[] { KvCacheScheme.DynamicPerTokenHead, KvCacheScheme.Kivi(kiviGroup, 128), KvCacheCases.StaticScheme(4, 8, headDim, 1), KvCacheScheme.StaticKeysPerChannel(KvCacheCases.StaticScheme(4, 8, headDim, 1).KeyScales) })
        {
            KvCacheOptions options = new(4, 8, 32, headDim, 256, scheme);
            using Int8KvCache cache = new(options);
            double ratio = cache.BytesPerToken / new FloatKvCache(options).BytesPerToken;
            Assert.True(ratio <= bound, $"{scheme}: {ratio}");
        }
    }

    [Fact]
    public void BytesPerToken_AgreesWithTheBlocksAFullCacheRents()
    {
        KvCacheOptions options = new(2, 4, 8, 64, 256, KvCacheScheme.DynamicPerTokenHead, blockTokens: 64);
        KvCacheBlockPool pool = new(options, capacity: 8);
        using Int8KvCache cache = new(options, pool);
        for (int layer = 0; layer < 2; layer++)
        {
            float[] data = KvCacheCases.Data(256, options, layer);
            cache.Append(layer, data, data, 256);
        }

        Assert.Equal(8, pool.RentedBlocks);
        Assert.Equal(pool.RentedBlocks * pool.BlockBytes, cache.BytesPerToken * 256);
    }

    internal static KvCacheOptions Options(KvCacheScheme scheme) => new(2, 2, 6, 32, 64, scheme, blockTokens: 8);

    internal static void AssertSameContents(Int8KvCache actual, Int8KvCache expected, KvCacheOptions options, int layer)
    {
        int count = expected.GetCount(layer);
        Assert.Equal(count, actual.GetCount(layer));
        float[] a = new float[count * options.HeadDim], e = new float[a.Length];
        for (int head = 0; head < options.KvHeads; head++)
        {
            actual.DequantizeKeys(layer, head, a);
            expected.DequantizeKeys(layer, head, e);
            Assert.Equal(e, a);
            actual.DequantizeValues(layer, head, a);
            expected.DequantizeValues(layer, head, e);
            Assert.Equal(e, a);
        }

        float[] query = KvCacheCases.Query(options, 9);
        float[] outputA = new float[query.Length], outputE = new float[query.Length];
        actual.Attend(layer, query, outputA);
        expected.Attend(layer, query, outputE);
        Assert.Equal(outputE, outputA);
    }
}
