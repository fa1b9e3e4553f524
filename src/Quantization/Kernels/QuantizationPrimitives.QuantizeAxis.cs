using System.Buffers;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>
    /// Quantizes an N-D tensor to int8 with given parameters per channel, per group or per token (ONNX QuantizeLinear
    /// with <c>axis</c> and <c>block_size</c>). Any axis works: contiguous rows and strided columns alike.
    /// </summary>
    /// <param name="source">The real values, row-major.</param>
    /// <param name="shape">The tensor's shape.</param>
    /// <param name="granularity">Which elements share a parameter pair.</param>
    /// <param name="scales">The scales, in the layout of <see cref="QuantizationGranularity.GetParameterShape"/>.</param>
    /// <param name="zeroPoints">The zero points, one per scale; empty for all zero.</param>
    /// <param name="destination">Receives the quantized values; the source's length.</param>
    /// <param name="convention">The numeric convention; <see cref="NumericConvention.Onnx"/> when <see langword="null"/>.</param>
    /// <param name="tensorName">A name for the data, used in exception messages.</param>
    /// <exception cref="ArgumentException">The shape does not fit the granularity or the data, or a span has the wrong length.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scale is not valid for the convention.</exception>
    /// <exception cref="NonFiniteValueException">The source contains NaN or an infinity.</exception>
    public static void Quantize(ReadOnlySpan<float> source, ReadOnlySpan<int> shape, QuantizationGranularity granularity, ReadOnlySpan<float> scales, ReadOnlySpan<sbyte> zeroPoints, Span<sbyte> destination, NumericConvention? convention = null, string? tensorName = null) =>
        QuantizeAxis(source, shape, granularity, scales, zeroPoints, MemoryMarshal.AsBytes(destination), convention, QuantizedType.Int8, tensorName);

    /// <summary>Quantizes an N-D tensor to uint8 with given parameters per channel, per group or per token.</summary>
    /// <param name="source">The real values, row-major.</param>
    /// <param name="shape">The tensor's shape.</param>
    /// <param name="granularity">Which elements share a parameter pair.</param>
    /// <param name="scales">The scales, in the layout of <see cref="QuantizationGranularity.GetParameterShape"/>.</param>
    /// <param name="zeroPoints">The zero points, one per scale; empty for all zero.</param>
    /// <param name="destination">Receives the quantized values; the source's length.</param>
    /// <param name="convention">The numeric convention; <see cref="NumericConvention.Onnx"/> when <see langword="null"/>.</param>
    /// <param name="tensorName">A name for the data, used in exception messages.</param>
    /// <exception cref="ArgumentException">The shape does not fit the granularity or the data, or a span has the wrong length.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scale is not valid for the convention.</exception>
    /// <exception cref="NonFiniteValueException">The source contains NaN or an infinity.</exception>
    public static void Quantize(ReadOnlySpan<float> source, ReadOnlySpan<int> shape, QuantizationGranularity granularity, ReadOnlySpan<float> scales, ReadOnlySpan<byte> zeroPoints, Span<byte> destination, NumericConvention? convention = null, string? tensorName = null) =>
        QuantizeAxis(source, shape, granularity, scales, zeroPoints, destination, convention, QuantizedType.UInt8, tensorName);

    private static void QuantizeAxis<T>(ReadOnlySpan<float> source, ReadOnlySpan<int> shape, QuantizationGranularity granularity, ReadOnlySpan<float> scales, ReadOnlySpan<T> zeroPoints, Span<byte> destination, NumericConvention? convention, QuantizedType type, string? tensorName)
        where T : struct, IBinaryInteger<T>
    {
        TensorLayout layout = ValidateAxisArguments(source.Length, destination.Length, shape, granularity, scales, zeroPoints);
        int[] pooled = ArrayPool<int>.Shared.Rent(scales.Length);
        try
        {
            Span<int> widened = pooled.AsSpan(0, scales.Length);
            Widen(zeroPoints, widened);
            QuantizeWithScales(source, layout, scales, widened, destination, convention ?? NumericConvention.Onnx, type, tensorName);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(pooled);
        }
    }

    /// <summary>Validates scales, turns them into the convention's quantize factors and quantizes.</summary>
    internal static void QuantizeWithScales(ReadOnlySpan<float> source, in TensorLayout layout, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints, Span<byte> destination, NumericConvention convention, QuantizedType type, string? tensorName, string sourceName = "source", string scalesName = "scales")
    {
        for (int i = 0; i < scales.Length; i++)
        {
            ValidateScale(scales[i], convention.MultipliesByReciprocal, scalesName, i);
        }

        if (!convention.MultipliesByReciprocal)
        {
            QuantizeWithFactors(source, layout, scales, zeroPoints, destination, convention, type, tensorName, sourceName);
            return;
        }

        float[] factors = ArrayPool<float>.Shared.Rent(scales.Length);
        try
        {
            for (int i = 0; i < scales.Length; i++)
            {
                factors[i] = convention.GetQuantizeFactor(scales[i]);
            }

            QuantizeWithFactors(source, layout, factors.AsSpan(0, scales.Length), zeroPoints, destination, convention, type, tensorName, sourceName);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(factors);
        }
    }

    /// <summary>Quantizes every run of the layout; <paramref name="factors"/> are what the convention applies (scale or reciprocal).</summary>
    internal static void QuantizeWithFactors(ReadOnlySpan<float> source, in TensorLayout layout, ReadOnlySpan<float> factors, ReadOnlySpan<int> zeroPoints, Span<byte> destination, NumericConvention convention, QuantizedType type, string? tensorName, string sourceName = "source")
    {
        QuantizeVisitor visitor = new(source, destination, factors, zeroPoints, convention, type);
        layout.Visit(ref visitor);
        if (visitor.MaybeNonFinite)
        {
            ThrowIfNonFinite(source, tensorName, sourceName);
        }
    }

    /// <summary>Validates the arguments shared by the N-D quantize and dequantize overloads and resolves the layout.</summary>
    private static TensorLayout ValidateAxisArguments<T>(int sourceLength, int destinationLength, ReadOnlySpan<int> shape, QuantizationGranularity granularity, ReadOnlySpan<float> scales, ReadOnlySpan<T> zeroPoints)
    {
        TensorLayout layout = TensorLayout.Create(shape, granularity, nameof(shape));
        layout.RequireElementCount(sourceLength, shape, tensorName: null, nameof(shape));

        ValidateLengths(sourceLength, destinationLength, "destination");
        if (scales.Length != layout.ParameterCount)
        {
            throw new ArgumentException(FormattableString.Invariant($"{granularity} over shape [{string.Join(", ", shape.ToArray())}] needs {layout.ParameterCount} scales, not {scales.Length}."), nameof(scales));
        }

        if (!zeroPoints.IsEmpty && zeroPoints.Length != scales.Length)
        {
            throw new ArgumentException(FormattableString.Invariant($"There are {scales.Length} scales but {zeroPoints.Length} zero points."), nameof(zeroPoints));
        }

        return layout;
    }

    private static void Widen<T>(ReadOnlySpan<T> zeroPoints, Span<int> destination)
        where T : struct, IBinaryInteger<T>
    {
        if (zeroPoints.IsEmpty)
        {
            destination.Clear();
            return;
        }

        for (int i = 0; i < zeroPoints.Length; i++)
        {
            destination[i] = int.CreateTruncating(zeroPoints[i]);
        }
    }

    private ref struct QuantizeVisitor(ReadOnlySpan<float> source, Span<byte> destination, ReadOnlySpan<float> factors, ReadOnlySpan<int> zeroPoints, NumericConvention convention, QuantizedType type) : IRunVisitor
    {
        private readonly ReadOnlySpan<float> _source = source;
        private readonly Span<byte> _destination = destination;
        private readonly ReadOnlySpan<float> _factors = factors;
        private readonly ReadOnlySpan<int> _zeroPoints = zeroPoints;

        public bool MaybeNonFinite { get; private set; }

        public void Uniform(int start, int length, int parameter) =>
            MaybeNonFinite |= QuantizeLanes(convention, _source.Slice(start, length), _destination.Slice(start, length), new UniformParameters(_factors[parameter], _zeroPoints[parameter]), type);

        public void PerLane(int start, int length, int firstParameter) =>
            MaybeNonFinite |= QuantizeLanes(convention, _source.Slice(start, length), _destination.Slice(start, length), new PerLaneParameters(_factors.Slice(firstParameter, length), _zeroPoints.Slice(firstParameter, length)), type);
    }
}
