using System.Numerics.Tensors;

using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>Per-channel quantization with given scales (one per row): reads 4 bytes and writes 1 per element.</summary>
public class StaticQuantizeBenchmarks : KernelBenchmark
{
    private static readonly QuantizationGranularity PerRow = QuantizationGranularity.PerChannel(0);

    [Benchmark]
    public void NaiveScalar()
    {
        for (int r = 0; r < Rows; r++)
        {
            float scale = Scales[r];
            int start = r * Columns;
            for (int c = 0; c < Columns; c++)
            {
                Quantized[start + c] = (sbyte)Math.Clamp(MathF.Round(Source[start + c] / scale), -128f, 127f);
            }
        }
    }

    [Benchmark]
    public void TensorPrimitivesComposed()
    {
        for (int r = 0; r < Rows; r++)
        {
            TensorPrimitives.Divide(Source.AsSpan(r * Columns, Columns), Scales[r], RowBuffer);
            TensorPrimitives.Round(RowBuffer, RowBuffer);
            TensorPrimitives.ConvertSaturating<float, sbyte>(RowBuffer, Quantized.AsSpan(r * Columns, Columns));
        }
    }

    [Benchmark]
    public void Library() =>
        QuantizationPrimitives.Quantize(Source, Shape, PerRow, Scales, ZeroPoints, Quantized);
}
