using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>
/// The cost of appending one decoded token's keys and values to one layer (8 KV heads, head dim 128): a copy for the
/// fp32 cache (the baseline), quantization for the int8 schemes. A full cache is cleared and refilled (1 in 4096 appends).
/// </summary>
[Config(typeof(KernelBenchmarkConfig))]
public class KvCacheAppendBenchmarks : IDisposable
{
    private const int KvHeads = 8, QueryHeads = 32, HeadDim = 128, MaxTokens = 4096;

    private FloatKvCache _float = null!;
    private Int8KvCache _dynamic = null!;
    private Int8KvCache _static = null!;
    private Int8KvCache _kivi = null!;
    private float[] _keys = null!;
    private float[] _values = null!;

    [GlobalSetup]
    public void Setup()
    {
        Random random = new(42);
        _keys = KvCacheData.Gaussian(KvHeads * HeadDim, random);
        _values = KvCacheData.Gaussian(KvHeads * HeadDim, random);
        _float = new FloatKvCache(new KvCacheOptions(1, KvHeads, QueryHeads, HeadDim, MaxTokens));
        _dynamic = new Int8KvCache(new KvCacheOptions(1, KvHeads, QueryHeads, HeadDim, MaxTokens, KvCacheScheme.DynamicPerTokenHead));
        float[] scales = [.. Enumerable.Repeat(4f / 127, KvHeads * HeadDim)];
        _static = new Int8KvCache(new KvCacheOptions(1, KvHeads, QueryHeads, HeadDim, MaxTokens, KvCacheScheme.StaticPerChannel(scales, scales)));
        _kivi = new Int8KvCache(new KvCacheOptions(1, KvHeads, QueryHeads, HeadDim, MaxTokens, KvCacheScheme.Kivi(32, 128)));
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _dynamic?.Dispose();
        _static?.Dispose();
        _kivi?.Dispose();
        GC.SuppressFinalize(this);
    }

    [Benchmark(Baseline = true)]
    public void Fp32Append()
    {
        if (_float.Count == MaxTokens)
        {
            _float.Clear();
        }

        _float.Append(0, _keys, _values);
    }

    [Benchmark]
    public void Int8AppendDynamic() => Append(_dynamic);

    [Benchmark]
    public void Int8AppendStatic() => Append(_static);

    /// <summary>KIVI copies each token into its float window and quantizes the window every 128 tokens: the mean covers both.</summary>
    [Benchmark]
    public void Int8AppendKivi() => Append(_kivi);

    private void Append(Int8KvCache cache)
    {
        if (cache.Count == MaxTokens)
        {
            cache.Clear();
        }

        cache.Append(0, _keys, _values);
    }
}
