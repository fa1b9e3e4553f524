using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>
/// A 512-token prompt through one layer's KV cache (32 query heads, 8 KV heads, head dim 128, one thread): append and
/// attend the prompt as one causal block (<c>Attend(layer, queries, output, tokens)</c>), against appending and
/// attending it token by token as a decode loop would. Both start from an empty cache and give the same bits.
/// </summary>
[Config(typeof(KernelBenchmarkConfig))]
public class KvCachePrefillBenchmarks : IDisposable
{
    private const int KvHeads = 8, QueryHeads = 32, HeadDim = 128, Tokens = 512;

    private FloatKvCache _float = null!;
    private Int8KvCache _int8 = null!;
    private float[] _keys = null!;
    private float[] _values = null!;
    private float[] _queries = null!;
    private float[] _output = null!;

    [GlobalSetup]
    public void Setup()
    {
        KvCacheOptions options = new(1, KvHeads, QueryHeads, HeadDim, Tokens);
        _float = new FloatKvCache(options);
        _int8 = new Int8KvCache(options);
        Random random = new(42);
        _keys = KvCacheData.Gaussian(Tokens * KvHeads * HeadDim, random);
        _values = KvCacheData.Gaussian(Tokens * KvHeads * HeadDim, random);
        _queries = KvCacheData.Gaussian(Tokens * QueryHeads * HeadDim, random);
        _output = new float[_queries.Length];
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _int8?.Dispose();
        GC.SuppressFinalize(this);
    }

    [Benchmark(Baseline = true)]
    public void Fp32TokenByToken()
    {
        _float.Clear();
        TokenByToken(_float.Append, _float.Attend);
    }

    [Benchmark]
    public void Fp32Prefill()
    {
        _float.Clear();
        _float.Append(0, _keys, _values, Tokens);
        _float.Attend(0, _queries, _output, Tokens);
    }

    [Benchmark]
    public void Int8TokenByToken()
    {
        _int8.Clear();
        TokenByToken(_int8.Append, _int8.Attend);
    }

    [Benchmark]
    public void Int8Prefill()
    {
        _int8.Clear();
        _int8.Append(0, _keys, _values, Tokens);
        _int8.Attend(0, _queries, _output, Tokens);
    }

    private void TokenByToken(AppendOne append, AttendOne attend)
    {
        int width = KvHeads * HeadDim, row = QueryHeads * HeadDim;
        for (int t = 0; t < Tokens; t++)
        {
            append(0, _keys.AsSpan(t * width, width), _values.AsSpan(t * width, width));
            attend(0, _queries.AsSpan(t * row, row), _output.AsSpan(t * row, row));
        }
    }

    private delegate void AppendOne(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values);

    private delegate void AttendOne(int layer, ReadOnlySpan<float> query, Span<float> output);
}
