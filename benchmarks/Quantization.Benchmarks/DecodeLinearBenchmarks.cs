using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>
/// <see cref="QuantizedLinear"/> at the feed-forward shapes of a 1.1B-parameter Llama decoder (TinyLlama: hidden 2048,
/// FFN 5632), for one token (decode's GEMV) and a few, on one thread (the baseline) and on two in the same run: how far
/// the second thread speeds up a call whose weight streams from memory.
/// </summary>
/// <remarks>
/// Each method rotates over copies of the weight, about 96 MiB in all (beyond the caches), as a decode step reads every
/// layer's weight from memory once. The W8A8 rows include quantizing the activations.
/// </remarks>
[Config(typeof(KernelBenchmarkConfig))]
public class DecodeLinearBenchmarks
{
    private const long RotatedBytes = 96L << 20;

    private QuantizedLinear[] _layers = [];
    private float[] _input = [];
    private float[] _output = [];
    private int _next;

    /// <summary>Gets or sets the shape, K x N: the gate and up projections (2048 x 5632) or the down projection (5632 x 2048).</summary>
    [Params("2048x5632", "5632x2048")]
    public string Shape { get; set; } = "2048x5632";

    /// <summary>Gets or sets the mode: int8 weight and activations, or a 4-bit weight (groups of 32) with float activations.</summary>
    [Params(QuantizedLinearMode.W8A8, QuantizedLinearMode.W4A16)]
    public QuantizedLinearMode Mode { get; set; }

    /// <summary>Gets or sets the number of tokens: 1 is a GEMV.</summary>
    [Params(1, 4)]
    public int M { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        int k = int.Parse(Shape.Split('x')[0], System.Globalization.CultureInfo.InvariantCulture);
        int n = int.Parse(Shape.Split('x')[1], System.Globalization.CultureInfo.InvariantCulture);
        bool fourBit = Mode == QuantizedLinearMode.W4A16;
        long weightBytes = fourBit ? (long)n * k / 2 : (long)n * k;
        int copies = (int)Math.Max(2, RotatedBytes / weightBytes);
        Random random = new(42);
        float[] weight = new float[n * k];
        _layers = new QuantizedLinear[copies];
        for (int c = 0; c < copies; c++)
        {
            for (int i = 0; i < weight.Length; i++)
            {
                weight[i] = (float)(random.NextDouble() - 0.5) * 0.04f;
            }

            QuantizationScheme scheme = fourBit ? QuantizationScheme.Int4PerGroup(32) : QuantizationScheme.Int8PerChannel();
            _layers[c] = new QuantizedLinear(QuantizedTensor.Quantize(weight, [n, k], scheme));
        }

        _input = new float[M * k];
        for (int i = 0; i < _input.Length; i++)
        {
            _input[i] = (float)(random.NextDouble() - 0.5);
        }

        _output = new float[M * n];
    }

    [Benchmark(Baseline = true)]
    public void OneThread() => Forward(1);

    [Benchmark]
    public void TwoThreads() => Forward(2);

    private void Forward(int threads)
    {
        QuantizedLinear layer = _layers[_next++ % _layers.Length];
        layer.MaxDegreeOfParallelism = threads;
        layer.Forward(_input, _output, M, Mode);
    }
}
