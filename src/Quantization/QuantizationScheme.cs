using System.Diagnostics.CodeAnalysis;

namespace Quantization;

/// <summary>
/// What a quantized tensor is: the integer type, symmetric or asymmetric, the range used, the granularity of its
/// parameters and the numeric convention that computes them. Immutable and validated at construction.
/// </summary>
public sealed record QuantizationScheme
{
    /// <summary>Initializes a new instance of the <see cref="QuantizationScheme"/> class.</summary>
    /// <param name="type">The integer type.</param>
    /// <param name="symmetric">Whether the zero point is fixed (0 for signed types): the usual choice for weights.</param>
    /// <param name="granularity">Which elements share one scale and zero point.</param>
    /// <param name="convention">The numeric convention; <see cref="NumericConvention.Onnx"/> when <see langword="null"/>.</param>
    /// <param name="range">The range used; the convention's default (<see cref="NumericConvention.GetDefaultRange"/>) when <see langword="null"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="type"/>, <paramref name="range"/> or the granularity kind is not a defined value.</exception>
    /// <exception cref="ArgumentException">A restricted range for an unsigned type, or a combination the convention does not define (GgmlQ8_0 is symmetric int8 over [-127, 127] only).</exception>
    public QuantizationScheme(QuantizedType type, bool symmetric, QuantizationGranularity granularity, NumericConvention? convention = null, QuantizationRange? range = null)
    {
        if (!Enum.IsDefined(type))
        {
            throw new ArgumentOutOfRangeException(nameof(type), type, "Unknown quantized type.");
        }

        if (!Enum.IsDefined(granularity.Kind))
        {
            throw new ArgumentOutOfRangeException(nameof(granularity), granularity.Kind, "Unknown granularity kind.");
        }

        Convention = convention ?? NumericConvention.Onnx;
        Range = range ?? Convention.GetDefaultRange(type, symmetric);
        if (!Enum.IsDefined(Range))
        {
            throw new ArgumentOutOfRangeException(nameof(range), Range, "Unknown quantization range.");
        }

        if (Range == QuantizationRange.Restricted && !type.IsSigned())
        {
            throw new ArgumentException($"The restricted range drops the most negative value of a signed type; {type} is unsigned.", nameof(range));
        }

        Type = type;
        Symmetric = symmetric;
        Granularity = granularity;
        (QuantMin, QuantMax) = NumericConvention.GetQuantRange(type, Range);
        Convention.ValidateQuantRange(QuantMin, QuantMax, symmetric, nameof(convention));
    }

    /// <summary>Gets the integer type.</summary>
    public QuantizedType Type { get; }

    /// <summary>Gets whether the zero point is fixed at the middle of the range.</summary>
    public bool Symmetric { get; }

    /// <summary>Gets which elements share one scale and zero point.</summary>
    public QuantizationGranularity Granularity { get; }

    /// <summary>Gets the numeric convention.</summary>
    public NumericConvention Convention { get; }

    /// <summary>Gets the range used.</summary>
    public QuantizationRange Range { get; }

    /// <summary>Gets the smallest quantized value that parameters map the observed range onto.</summary>
    public int QuantMin { get; }

    /// <summary>Gets the largest quantized value that parameters map the observed range onto.</summary>
    public int QuantMax { get; }

    /// <summary>Creates the default weight scheme: symmetric int8 per output channel, [-127, 127], ONNX Runtime's arithmetic.</summary>
    /// <param name="axis">The output-channel axis: 0 for Conv and for [out, in] weights, 1 for ConvTranspose and for a MatMul's [in, out] B.</param>
    /// <returns>The scheme.</returns>
    public static QuantizationScheme Int8PerChannel(int axis = 0) => new(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerChannel(axis));

    /// <summary>Creates symmetric int8 per tensor, [-127, 127], ONNX Runtime's arithmetic.</summary>
    /// <returns>The scheme.</returns>
    public static QuantizationScheme Int8PerTensor() => new(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerTensor);

    /// <summary>Creates asymmetric uint8 per tensor, [0, 255]: ONNX Runtime's default for activations.</summary>
    /// <returns>The scheme.</returns>
    public static QuantizationScheme UInt8PerTensorAsymmetric() => new(QuantizedType.UInt8, symmetric: false, QuantizationGranularity.PerTensor);

    /// <summary>
    /// Creates the usual 4-bit weight scheme: groups of <paramref name="groupSize"/> along the last axis (the input features
    /// of an [out, in] weight), ONNX's arithmetic. Symmetric: int4 over the full range [-8, 7] with scale
    /// <c>2·max|w| / 15</c>, as GPTQ's reference and ONNX Runtime's MatMulNBits use it. Asymmetric: uint4 over [0, 15].
    /// </summary>
    /// <param name="groupSize">The number of consecutive inputs that share a scale (32, 64 and 128 are usual).</param>
    /// <param name="symmetric">Whether the zero point is fixed.</param>
    /// <returns>The scheme.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="groupSize"/> is not positive.</exception>
    public static QuantizationScheme Int4PerGroup(int groupSize, bool symmetric = true) => symmetric
        ? new(QuantizedType.Int4, symmetric: true, QuantizationGranularity.PerGroup(groupSize), range: QuantizationRange.Full)
        : new(QuantizedType.UInt4, symmetric: false, QuantizationGranularity.PerGroup(groupSize));

    /// <summary>Creates ggml's Q8_0 layout: symmetric int8 in blocks of 32 along the last axis with fp16 scales.</summary>
    /// <returns>The scheme.</returns>
    [SuppressMessage("Naming", "CA1707:Identifiers should not contain underscores", Justification = "Q8_0 is ggml's name for the format.")]
    public static QuantizationScheme GgmlQ8_0() => new(QuantizedType.Int8, symmetric: true, QuantizationGranularity.PerGroup(32), NumericConvention.GgmlQ8_0);

    /// <summary>Returns this scheme with another granularity.</summary>
    /// <param name="granularity">The granularity.</param>
    /// <returns>The new scheme.</returns>
    public QuantizationScheme WithGranularity(QuantizationGranularity granularity) => new(Type, Symmetric, granularity, Convention, Range);
}
