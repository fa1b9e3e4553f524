using System.Numerics.Tensors;

using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>Per-row min and max of the 64 MiB weight: the observer statistic. Reads 4 bytes per element.</summary>
public class MinMaxBenchmarks : KernelBenchmark
{
    [Benchmark]
    public float NaiveScalar()
    {
        float sum = 0;
        for (int r = 0; r < Rows; r++)
        {
            float min = float.PositiveInfinity, max = float.NegativeInfinity;
            for (int c = 0; c < Columns; c++)
            {
                float x = Source[(r * Columns) + c];
                min = Math.Min(min, x);
                max = Math.Max(max, x);
            }

            sum += max - min;
        }

        return sum;
    }

    [Benchmark]
    public float TensorPrimitivesComposed()
    {
        float sum = 0;
        for (int r = 0; r < Rows; r++)
        {
            ReadOnlySpan<float> row = Source.AsSpan(r * Columns, Columns);
            sum += TensorPrimitives.Max(row) - TensorPrimitives.Min(row);
        }

        return sum;
    }

    [Benchmark]
    public float Library()
    {
        float sum = 0;
        for (int r = 0; r < Rows; r++)
        {
            (float min, float max) = QuantizationPrimitives.MinMax(Source.AsSpan(r * Columns, Columns));
            sum += max - min;
        }

        return sum;
    }
}
