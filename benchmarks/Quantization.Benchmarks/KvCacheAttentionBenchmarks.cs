using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>
/// One decode step of attention for one layer (32 query heads, 8 KV heads, head dim 128, one thread) on a cache holding
/// <see cref="Context"/> tokens: the int8 cache (dynamic per-token-head scales) against the fp32 cache with the same
/// algorithm and SIMD kernels (the baseline); also the int8 cache on two threads.
/// </summary>
[Config(typeof(KernelBenchmarkConfig))]
public class KvCacheAttentionBenchmarks : IDisposable
{
    private const int KvHeads = 8, QueryHeads = 32, HeadDim = 128;

    private FloatKvCache _float = null!;
    private Int8KvCache _int8 = null!;
    private float[] _query = null!;
    private float[] _output = null!;

    /// <summary>Gets or sets the tokens in the cache.</summary>
    [Params(512, 4096, 16384)]
    public int Context { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        KvCacheOptions options = new(1, KvHeads, QueryHeads, HeadDim, Context);
        _float = new FloatKvCache(options);
        _int8 = new Int8KvCache(options);
        Random random = new(42);
        float[] keys = KvCacheData.Gaussian(Context * KvHeads * HeadDim, random);
        float[] values = KvCacheData.Gaussian(Context * KvHeads * HeadDim, random);
        _float.Append(0, keys, values, Context);
        _int8.Append(0, keys, values, Context);
        _query = KvCacheData.Gaussian(QueryHeads * HeadDim, random);
        _output = new float[QueryHeads * HeadDim];
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _int8?.Dispose();
        GC.SuppressFinalize(this);
    }

    [Benchmark(Baseline = true)]
    public void Fp32Attend() => _float.Attend(0, _query, _output);

    [Benchmark]
    public void Int8Attend() => _int8.Attend(0, _query, _output);

    /// <summary>The int8 attention with the KV heads split across two threads (the same bits as one thread).</summary>
    [Benchmark]
    public void Int8AttendTwoThreads() => _int8.Attend(0, _query, _output, 1, 2);
}

/// <summary>Synthetic K/V data for the KV cache benchmarks.</summary>
internal static class KvCacheData
{
    public static float[] Gaussian(int length, Random random)
    {
        float[] data = new float[length];
        for (int i = 0; i < length; i++)
        {
            data[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        }

        return data;
    }
}
