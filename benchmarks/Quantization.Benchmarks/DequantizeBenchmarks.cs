using System.Numerics.Tensors;

using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>Per-channel dequantization, <c>(q - zeroPoint) * scale</c>: reads 1 byte and writes 4 per element.</summary>
public class DequantizeBenchmarks : KernelBenchmark
{
    private static readonly QuantizationGranularity PerRow = QuantizationGranularity.PerChannel(0);

    [Benchmark]
    public void NaiveScalar()
    {
        for (int r = 0; r < Rows; r++)
        {
            float scale = Scales[r];
            int zeroPoint = ZeroPoints[r];
            int start = r * Columns;
            for (int c = 0; c < Columns; c++)
            {
                FloatDestination[start + c] = (Quantized[start + c] - zeroPoint) * scale;
            }
        }
    }

    [Benchmark]
    public void TensorPrimitivesComposed()
    {
        for (int r = 0; r < Rows; r++)
        {
            Span<float> row = FloatDestination.AsSpan(r * Columns, Columns);
            TensorPrimitives.ConvertChecked<sbyte, float>(Quantized.AsSpan(r * Columns, Columns), row);
            TensorPrimitives.Subtract(row, ZeroPoints[r], row);
            TensorPrimitives.Multiply(row, Scales[r], row);
        }
    }

    [Benchmark]
    public void Library() =>
        QuantizationPrimitives.Dequantize(Quantized, Shape, PerRow, Scales, ZeroPoints, FloatDestination);
}
