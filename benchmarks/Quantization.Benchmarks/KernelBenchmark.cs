using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>
/// The shared setup: a 4096 x 4096 fp32 weight (64 MiB, far beyond cache), its per-row int8 quantization, and the
/// baseline every kernel is measured against: copying the same 64 MiB of floats (8 bytes moved per element).
/// </summary>
[Config(typeof(KernelBenchmarkConfig))]
public abstract class KernelBenchmark
{
    protected const int Rows = 4096;
    protected const int Columns = 4096;

    protected static readonly int[] Shape = [Rows, Columns];

    protected float[] Source { get; private set; } = [];

    protected float[] FloatDestination { get; private set; } = [];

    protected sbyte[] Quantized { get; private set; } = [];

    protected float[] Scales { get; private set; } = [];

    protected sbyte[] ZeroPoints { get; private set; } = [];

    /// <summary>A cache-resident row buffer for compositions that need a temporary.</summary>
    protected float[] RowBuffer { get; private set; } = [];

    [GlobalSetup]
    public void Setup()
    {
        Random random = new(42);
        Source = new float[Rows * Columns];
        for (int i = 0; i < Source.Length; i++)
        {
            Source[i] = (float)(random.NextDouble() + random.NextDouble() + random.NextDouble() - 1.5);
        }

        FloatDestination = new float[Source.Length];
        Quantized = new sbyte[Source.Length];
        Scales = new float[Rows];
        ZeroPoints = new sbyte[Rows];
        RowBuffer = new float[Columns];
        QuantizationPrimitives.QuantizeDynamic(Source, Shape, QuantizationScheme.Int8PerChannel(), Quantized, Scales, ZeroPoints);
    }

    [Benchmark(Baseline = true)]
    public void MemoryCopy() => Source.AsSpan().CopyTo(FloatDestination);
}
