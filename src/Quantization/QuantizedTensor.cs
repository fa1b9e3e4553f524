using System.Runtime.InteropServices;

namespace Quantization;

/// <summary>
/// A quantized tensor: its shape, its integer data, its scheme and its parameters. Immutable; it can dequantize itself.
/// </summary>
/// <remarks>Create one with <see cref="Quantize(ReadOnlySpan{float}, ReadOnlySpan{int}, QuantizationScheme, string?)"/> (dynamic: parameters from the data)
/// or <see cref="Quantize(ReadOnlySpan{float}, ReadOnlySpan{int}, QuantizationScheme, QuantizationParameters, string?)"/> (static: parameters from calibration),
/// or wrap existing data with the constructor.</remarks>
public sealed class QuantizedTensor
{
    private readonly int[] _shape;
    private readonly byte[] _data;
    private readonly TensorLayout _layout;

    /// <summary>Initializes a new instance of the <see cref="QuantizedTensor"/> class from existing data, which is copied.</summary>
    /// <param name="data">The quantized values, row-major; int8 values as two's complement bytes.</param>
    /// <param name="shape">The shape.</param>
    /// <param name="scheme">The scheme the data was quantized with.</param>
    /// <param name="parameters">The parameters, as many as the scheme's granularity needs for <paramref name="shape"/>.</param>
    /// <param name="name">An optional name, used in messages and reports.</param>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> or <paramref name="parameters"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The shape does not fit the data or the granularity, the parameter count is wrong, or a zero point is outside the scheme's range.</exception>
    /// <exception cref="NotSupportedException">The scheme's type is 4-bit (packed storage is not supported yet).</exception>
    public QuantizedTensor(ReadOnlySpan<byte> data, ReadOnlySpan<int> shape, QuantizationScheme scheme, QuantizationParameters parameters, string? name = null)
        : this(data.ToArray(), shape.ToArray(), scheme, parameters, name)
    {
    }

    private QuantizedTensor(byte[] data, int[] shape, QuantizationScheme scheme, QuantizationParameters parameters, string? name)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        ArgumentNullException.ThrowIfNull(parameters);
        _layout = CreateLayout(shape, scheme, name);
        if (data.Length != _layout.ElementCount)
        {
            throw new ArgumentException(FormattableString.Invariant($"{TensorNames.Describe(name)} has shape [{string.Join(", ", shape)}] ({_layout.ElementCount} elements) but {data.Length} bytes of data."), nameof(data));
        }

        if (parameters.Count != _layout.ParameterCount)
        {
            throw new ArgumentException(FormattableString.Invariant($"{TensorNames.Describe(name)} needs {_layout.ParameterCount} parameter pairs for {scheme.Granularity}, not {parameters.Count}."), nameof(parameters));
        }

        ReadOnlySpan<int> zeroPoints = parameters.ZeroPoints;
        for (int i = 0; i < zeroPoints.Length; i++)
        {
            if (zeroPoints[i] < scheme.QuantMin || zeroPoints[i] > scheme.QuantMax)
            {
                throw new ArgumentException(FormattableString.Invariant($"{TensorNames.Describe(name)}: zero point {zeroPoints[i]} at index {i} is outside [{scheme.QuantMin}, {scheme.QuantMax}]."), nameof(parameters));
            }
        }

        _data = data;
        _shape = shape;
        Scheme = scheme;
        Parameters = parameters;
        Name = name;
    }

    /// <summary>Gets the tensor's name, or <see langword="null"/>.</summary>
    public string? Name { get; }

    /// <summary>Gets the shape.</summary>
    public ReadOnlySpan<int> Shape => _shape;

    /// <summary>Gets the number of elements.</summary>
    public int ElementCount => _data.Length;

    /// <summary>Gets the scheme.</summary>
    public QuantizationScheme Scheme { get; }

    /// <summary>Gets the scales and zero points.</summary>
    public QuantizationParameters Parameters { get; }

    /// <summary>Gets the raw quantized bytes (two's complement for int8).</summary>
    public ReadOnlySpan<byte> Data => _data;

    /// <summary>Gets the storage size: one byte per element plus four bytes per scale and one per zero point.</summary>
    public long SizeInBytes => _data.Length + (5L * Parameters.Count);

    /// <summary>Quantizes a tensor dynamically: parameters are computed from the data with the scheme's convention.</summary>
    /// <param name="values">The real values, row-major.</param>
    /// <param name="shape">The shape.</param>
    /// <param name="scheme">The scheme.</param>
    /// <param name="name">An optional name, used in messages and reports.</param>
    /// <returns>The quantized tensor.</returns>
    /// <exception cref="ArgumentException">The shape does not fit the data or the granularity, or (GgmlQ8_0) a block's range overflows the fp16 scale.</exception>
    /// <exception cref="NonFiniteValueException">The values contain NaN or an infinity.</exception>
    /// <exception cref="NotSupportedException">The scheme's type is 4-bit.</exception>
    public static QuantizedTensor Quantize(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, QuantizationScheme scheme, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        TensorLayout layout = CreateLayout(shape, scheme, name);
        layout.RequireElementCount(values.Length, shape, name, nameof(values));
        byte[] data = new byte[values.Length];
        float[] scales = new float[layout.ParameterCount];
        int[] zeroPoints = new int[layout.ParameterCount];
        QuantizationPrimitives.QuantizeDynamicCore(values, layout, scheme, data, scales, zeroPoints, name, nameof(values));
        return new QuantizedTensor(data, shape.ToArray(), scheme, QuantizationParameters.Own(scales, zeroPoints), name);
    }

    /// <summary>Quantizes a tensor statically, with given parameters (from calibration, for example).</summary>
    /// <param name="values">The real values, row-major.</param>
    /// <param name="shape">The shape.</param>
    /// <param name="scheme">The scheme.</param>
    /// <param name="parameters">The parameters, as many as the scheme's granularity needs for <paramref name="shape"/>.</param>
    /// <param name="name">An optional name, used in messages and reports.</param>
    /// <returns>The quantized tensor.</returns>
    /// <exception cref="ArgumentException">The shape does not fit the data or the granularity, or the parameters do not fit the scheme.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A scale is zero for a convention that divides by it.</exception>
    /// <exception cref="NonFiniteValueException">The values contain NaN or an infinity.</exception>
    /// <exception cref="NotSupportedException">The scheme's type is 4-bit.</exception>
    public static QuantizedTensor Quantize(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, QuantizationScheme scheme, QuantizationParameters parameters, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        ArgumentNullException.ThrowIfNull(parameters);
        TensorLayout layout = CreateLayout(shape, scheme, name);
        layout.RequireElementCount(values.Length, shape, name, nameof(values));
        byte[] data = new byte[values.Length];
        QuantizedTensor tensor = new(data, shape.ToArray(), scheme, parameters, name);
        QuantizationPrimitives.QuantizeWithScales(values, layout, parameters.Scales, parameters.ZeroPoints, data, scheme.Convention, scheme.Type, name, nameof(values), nameof(parameters));
        return tensor;
    }

    /// <summary>Gets the data as int8 values.</summary>
    /// <returns>The values.</returns>
    /// <exception cref="InvalidOperationException">The scheme's type is not <see cref="QuantizedType.Int8"/>.</exception>
    public ReadOnlySpan<sbyte> GetInt8Data() => Scheme.Type == QuantizedType.Int8
        ? MemoryMarshal.Cast<byte, sbyte>(_data)
        : throw new InvalidOperationException($"{TensorNames.Describe(Name)} holds {Scheme.Type}, not Int8.");

    /// <summary>Dequantizes into a new array.</summary>
    /// <returns>The real values, row-major.</returns>
    public float[] Dequantize()
    {
        float[] values = new float[_data.Length];
        Dequantize(values);
        return values;
    }

    /// <summary>Dequantizes into <paramref name="destination"/>: <c>(q - zeroPoint) * scale</c> per element.</summary>
    /// <param name="destination">Receives the real values; must have <see cref="ElementCount"/> elements.</param>
    /// <exception cref="ArgumentException">The destination has the wrong length.</exception>
    public void Dequantize(Span<float> destination)
    {
        QuantizationPrimitives.ValidateLengths(_data.Length, destination.Length, nameof(destination));
        QuantizationPrimitives.DequantizeWithScales(_data, _layout, Parameters.Scales, Parameters.ZeroPoints, destination, Scheme.Type.IsSigned());
    }

    /// <inheritdoc/>
    public override string ToString() =>
        FormattableString.Invariant($"{TensorNames.Describe(Name)} [{string.Join(", ", _shape)}] {Scheme.Type} {Scheme.Granularity} ({Scheme.Convention}, {Parameters})");

    private static TensorLayout CreateLayout(ReadOnlySpan<int> shape, QuantizationScheme scheme, string? name)
    {
        if (scheme.Type.GetBitWidth() != 8)
        {
            throw new NotSupportedException($"{TensorNames.Describe(name)}: {scheme.Type} storage (packed 4-bit) is not supported yet; parameters for it can be computed with NumericConvention.");
        }

        return TensorLayout.Create(shape, scheme.Granularity, nameof(shape));
    }
}
