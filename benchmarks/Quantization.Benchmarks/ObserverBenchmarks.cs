using System.Numerics.Tensors;

using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>
/// Observers on 64 MiB of activations ([4096 tokens, 4096 features]) against the bandwidth of
/// <see cref="TensorPrimitives.Sum(ReadOnlySpan{float})"/> over the same data (the baseline): both only read.
/// </summary>
[Config(typeof(KernelBenchmarkConfig))]
public class ObserverBenchmarks
{
    private static readonly int[] Shape = [4096, 4096];
    private float[] _activations = [];

    [GlobalSetup]
    public void Setup()
    {
        Random random = new(42);
        _activations = new float[Shape[0] * Shape[1]];
        for (int i = 0; i < _activations.Length; i++)
        {
            _activations[i] = (float)((random.NextDouble() * 4) - 2);
        }
    }

    [Benchmark(Baseline = true)]
    public float TensorPrimitivesSum() => TensorPrimitives.Sum(_activations);

    [Benchmark]
    public long MinMaxPerTensor()
    {
        MinMaxObserver observer = new(QuantizationScheme.UInt8PerTensorAsymmetric());
        observer.Observe(_activations, Shape);
        return observer.ObservedCount;
    }

    [Benchmark]
    public long MinMaxPerToken()
    {
        MinMaxObserver observer = new(QuantizationScheme.Int8PerTensor().WithGranularity(QuantizationGranularity.PerToken));
        observer.Observe(_activations, Shape);
        return observer.ObservedCount;
    }

    [Benchmark]
    public long MinMaxPerChannelOfFeatures()
    {
        MinMaxObserver observer = new(QuantizationScheme.Int8PerChannel(axis: 1));
        observer.Observe(_activations, Shape);
        return observer.ObservedCount;
    }

    [Benchmark]
    public long MovingAveragePerTensor()
    {
        MovingAverageMinMaxObserver observer = new(QuantizationScheme.UInt8PerTensorAsymmetric());
        observer.Observe(_activations, Shape);
        return observer.ObservedCount;
    }
}
