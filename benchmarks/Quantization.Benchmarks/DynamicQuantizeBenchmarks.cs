using System.Numerics.Tensors;

using BenchmarkDotNet.Attributes;

namespace Quantization.Benchmarks;

/// <summary>
/// Per-channel dynamic quantization (observe + quantize each row, symmetric int8 [-127, 127], ONNX Runtime's
/// arithmetic): reads 4 bytes and writes 1 per element.
/// </summary>
public class DynamicQuantizeBenchmarks : KernelBenchmark
{
    private static readonly QuantizationScheme Scheme = QuantizationScheme.Int8PerChannel();

    [Benchmark]
    public void NaiveScalar()
    {
        for (int r = 0; r < Rows; r++)
        {
            int start = r * Columns;
            float min = 0f, max = 0f;
            for (int c = 0; c < Columns; c++)
            {
                min = Math.Min(min, Source[start + c]);
                max = Math.Max(max, Source[start + c]);
            }

            float scale = (float)(2.0 * Math.Max(-min, max) / 254.0);
            for (int c = 0; c < Columns; c++)
            {
                Quantized[start + c] = (sbyte)Math.Clamp(MathF.Round(Source[start + c] / scale), -128f, 127f);
            }

            Scales[r] = scale;
        }
    }

    [Benchmark]
    public void TensorPrimitivesComposed()
    {
        for (int r = 0; r < Rows; r++)
        {
            ReadOnlySpan<float> row = Source.AsSpan(r * Columns, Columns);
            float scale = (float)(2.0 * TensorPrimitives.MaxMagnitude(row) / 254.0);
            TensorPrimitives.Divide(row, scale, RowBuffer);
            TensorPrimitives.Round(RowBuffer, RowBuffer);
            TensorPrimitives.ConvertSaturating<float, sbyte>(RowBuffer, Quantized.AsSpan(r * Columns, Columns));
            Scales[r] = scale;
        }
    }

    [Benchmark]
    public void Library() =>
        QuantizationPrimitives.QuantizeDynamic(Source, Shape, Scheme, Quantized, Scales, ZeroPoints);
}
