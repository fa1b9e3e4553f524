using System.Buffers;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>
    /// Dequantizes an N-D int8 tensor with parameters per channel, per group or per token (ONNX DequantizeLinear with
    /// <c>axis</c> and <c>block_size</c>): <c>(q - zeroPoint) * scale</c> in float.
    /// </summary>
    /// <param name="source">The quantized values, row-major.</param>
    /// <param name="shape">The tensor's shape.</param>
    /// <param name="granularity">Which elements share a parameter pair.</param>
    /// <param name="scales">The scales, in the layout of <see cref="QuantizationGranularity.GetParameterShape"/>.</param>
    /// <param name="zeroPoints">The zero points, one per scale; empty for all zero.</param>
    /// <param name="destination">Receives the real values; the source's length.</param>
    /// <exception cref="ArgumentException">The shape does not fit the granularity or the data, or a span has the wrong length.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scale is negative or not finite.</exception>
    public static void Dequantize(ReadOnlySpan<sbyte> source, ReadOnlySpan<int> shape, QuantizationGranularity granularity, ReadOnlySpan<float> scales, ReadOnlySpan<sbyte> zeroPoints, Span<float> destination) =>
        DequantizeAxis(MemoryMarshal.AsBytes(source), shape, granularity, scales, zeroPoints, destination, signed: true);

    /// <summary>Dequantizes an N-D uint8 tensor with parameters per channel, per group or per token.</summary>
    /// <param name="source">The quantized values, row-major.</param>
    /// <param name="shape">The tensor's shape.</param>
    /// <param name="granularity">Which elements share a parameter pair.</param>
    /// <param name="scales">The scales, in the layout of <see cref="QuantizationGranularity.GetParameterShape"/>.</param>
    /// <param name="zeroPoints">The zero points, one per scale; empty for all zero.</param>
    /// <param name="destination">Receives the real values; the source's length.</param>
    /// <exception cref="ArgumentException">The shape does not fit the granularity or the data, or a span has the wrong length.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scale is negative or not finite.</exception>
    public static void Dequantize(ReadOnlySpan<byte> source, ReadOnlySpan<int> shape, QuantizationGranularity granularity, ReadOnlySpan<float> scales, ReadOnlySpan<byte> zeroPoints, Span<float> destination) =>
        DequantizeAxis(source, shape, granularity, scales, zeroPoints, destination, signed: false);

    private static void DequantizeAxis<T>(ReadOnlySpan<byte> source, ReadOnlySpan<int> shape, QuantizationGranularity granularity, ReadOnlySpan<float> scales, ReadOnlySpan<T> zeroPoints, Span<float> destination, bool signed)
        where T : struct, IBinaryInteger<T>
    {
        TensorLayout layout = ValidateAxisArguments(source.Length, destination.Length, shape, granularity, scales, zeroPoints);
        int[] pooled = ArrayPool<int>.Shared.Rent(scales.Length);
        try
        {
            Span<int> widened = pooled.AsSpan(0, scales.Length);
            Widen(zeroPoints, widened);
            DequantizeWithScales(source, layout, scales, widened, destination, signed);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(pooled);
        }
    }

    /// <summary>Validates the scales and dequantizes every run of the layout.</summary>
    internal static void DequantizeWithScales(ReadOnlySpan<byte> source, in TensorLayout layout, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints, Span<float> destination, bool signed)
    {
        for (int i = 0; i < scales.Length; i++)
        {
            ValidateScale(scales[i], allowZero: true, nameof(scales), i);
        }

        bool nonTemporal = UseNonTemporalStores((long)destination.Length * sizeof(float));
        DequantizeVisitor visitor = new(source, destination, scales, zeroPoints, signed, nonTemporal);
        layout.Visit(ref visitor);
        FenceNonTemporalStores(nonTemporal);
    }

    private readonly ref struct DequantizeVisitor(ReadOnlySpan<byte> source, Span<float> destination, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints, bool signed, bool nonTemporal) : IRunVisitor
    {
        private readonly ReadOnlySpan<byte> _source = source;
        private readonly Span<float> _destination = destination;
        private readonly ReadOnlySpan<float> _scales = scales;
        private readonly ReadOnlySpan<int> _zeroPoints = zeroPoints;

        public void Uniform(int start, int length, int parameter) =>
            DequantizeLanes(_source.Slice(start, length), _destination.Slice(start, length), new UniformParameters(_scales[parameter], _zeroPoints[parameter]), signed, nonTemporal);

        public void PerLane(int start, int length, int firstParameter) =>
            DequantizeLanes(_source.Slice(start, length), _destination.Slice(start, length), new PerLaneParameters(_scales.Slice(firstParameter, length), _zeroPoints.Slice(firstParameter, length)), signed, nonTemporal);
    }
}
