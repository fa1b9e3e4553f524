using System.Buffers;
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
    /// <param name="data">
    /// The quantized values, row-major: one byte per value for 8-bit types (int8 as two's complement), two values a byte
    /// for 4-bit types as <see cref="QuantizationPrimitives.PackInt4"/> lays them out ((element count + 1) / 2 bytes; with
    /// an odd count the last byte's high nibble is ignored).
    /// </param>
    /// <param name="shape">The shape.</param>
    /// <param name="scheme">The scheme the data was quantized with.</param>
    /// <param name="parameters">The parameters, as many as the scheme's granularity needs for <paramref name="shape"/>.</param>
    /// <param name="name">An optional name, used in messages and reports.</param>
    /// <exception cref="ArgumentNullException"><paramref name="scheme"/> or <paramref name="parameters"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The shape does not fit the data or the granularity, the parameter count is wrong, or a zero point is outside the scheme's range.</exception>
    public QuantizedTensor(ReadOnlySpan<byte> data, ReadOnlySpan<int> shape, QuantizationScheme scheme, QuantizationParameters parameters, string? name = null)
        : this(data.ToArray(), shape.ToArray(), scheme, parameters, name)
    {
    }

    private QuantizedTensor(byte[] data, int[] shape, QuantizationScheme scheme, QuantizationParameters parameters, string? name)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        ArgumentNullException.ThrowIfNull(parameters);
        _layout = TensorLayout.Create(shape, scheme.Granularity, nameof(shape));
        int stored = StoredLength(_layout.ElementCount, scheme.Type);
        if (data.Length != stored)
        {
            throw new ArgumentException(FormattableString.Invariant($"{TensorNames.Describe(name)} has shape [{string.Join(", ", shape)}] ({_layout.ElementCount} {scheme.Type} elements, {stored} bytes) but {data.Length} bytes of data."), nameof(data));
        }

        if (stored != _layout.ElementCount && _layout.ElementCount % 2 == 1)
        {
            data[^1] &= 0x0F; // the ignored high nibble of an odd count, zeroed so that equal tensors store equal bytes
        }

        ValidateParameters(_layout, scheme, parameters, name);
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
    public int ElementCount => _layout.ElementCount;

    /// <summary>Gets the scheme.</summary>
    public QuantizationScheme Scheme { get; }

    /// <summary>Gets the scales and zero points.</summary>
    public QuantizationParameters Parameters { get; }

    /// <summary>
    /// Gets the stored bytes: one per element for 8-bit types (two's complement for int8); for 4-bit types two elements a
    /// byte, element i in byte i / 2, the low nibble when i is even (ONNX's int4 packing over the flattened tensor).
    /// </summary>
    public ReadOnlySpan<byte> Data => _data;

    /// <summary>Gets the storage size: the stored bytes (<see cref="Data"/>) plus four bytes per scale and one per zero point.</summary>
    public long SizeInBytes => _data.Length + (5L * Parameters.Count);

    /// <summary>Quantizes a tensor dynamically: parameters are computed from the data with the scheme's convention.</summary>
    /// <param name="values">The real values, row-major.</param>
    /// <param name="shape">The shape.</param>
    /// <param name="scheme">The scheme.</param>
    /// <param name="name">An optional name, used in messages and reports.</param>
    /// <returns>The quantized tensor.</returns>
    /// <exception cref="ArgumentException">The shape does not fit the data or the granularity, or (GgmlQ8_0) a block's range overflows the fp16 scale.</exception>
    /// <exception cref="NonFiniteValueException">The values contain NaN or an infinity.</exception>
    public static QuantizedTensor Quantize(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, QuantizationScheme scheme, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        TensorLayout layout = TensorLayout.Create(shape, scheme.Granularity, nameof(shape));
        layout.RequireElementCount(values.Length, shape, name, nameof(values));
        byte[] codes = new byte[values.Length];
        float[] scales = new float[layout.ParameterCount];
        int[] zeroPoints = new int[layout.ParameterCount];
        QuantizationPrimitives.QuantizeDynamicCore(values, layout, scheme, codes, scales, zeroPoints, name, nameof(values));
        return FromCodes(codes, shape.ToArray(), scheme, QuantizationParameters.Own(scales, zeroPoints), name);
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
    public static QuantizedTensor Quantize(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, QuantizationScheme scheme, QuantizationParameters parameters, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        ArgumentNullException.ThrowIfNull(parameters);
        TensorLayout layout = TensorLayout.Create(shape, scheme.Granularity, nameof(shape));
        layout.RequireElementCount(values.Length, shape, name, nameof(values));
        ValidateParameters(layout, scheme, parameters, name);
        byte[] codes = new byte[values.Length];
        QuantizationPrimitives.QuantizeWithScales(values, layout, parameters.Scales, parameters.ZeroPoints, codes, scheme.Convention, scheme.Type, name, nameof(values), nameof(parameters));
        return FromCodes(codes, shape.ToArray(), scheme, parameters, name);
    }

    /// <summary>
    /// Wraps codes given one a byte (a signed code as its two's complement byte, within the type's range), packing them
    /// for 4-bit types; <paramref name="codes"/> is taken over for 8-bit types.
    /// </summary>
    internal static QuantizedTensor FromCodes(byte[] codes, int[] shape, QuantizationScheme scheme, QuantizationParameters parameters, string? name)
    {
        ArgumentNullException.ThrowIfNull(scheme);
        byte[] data = codes;
        if (scheme.Type.GetBitWidth() == 4)
        {
            data = new byte[StoredLength(codes.Length, scheme.Type)];
            if (scheme.Type.IsSigned())
            {
                QuantizationPrimitives.PackInt4(MemoryMarshal.Cast<byte, sbyte>(codes), data);
            }
            else
            {
                QuantizationPrimitives.PackUInt4(codes, data);
            }
        }

        return new QuantizedTensor(data, shape, scheme, parameters, name);
    }

    /// <summary>Gets the data as int8 values.</summary>
    /// <returns>The values.</returns>
    /// <exception cref="InvalidOperationException">The scheme's type is not <see cref="QuantizedType.Int8"/>.</exception>
    public ReadOnlySpan<sbyte> GetInt8Data() => Scheme.Type == QuantizedType.Int8
        ? MemoryMarshal.Cast<byte, sbyte>(_data)
        : throw new InvalidOperationException($"{TensorNames.Describe(Name)} holds {Scheme.Type}, not Int8.");

    /// <summary>Gets the data as int4 values, one per element (unpacked from <see cref="Data"/>).</summary>
    /// <returns>A new array of the values, each in [-8, 7].</returns>
    /// <exception cref="InvalidOperationException">The scheme's type is not <see cref="QuantizedType.Int4"/>.</exception>
    public sbyte[] GetInt4Data()
    {
        if (Scheme.Type != QuantizedType.Int4)
        {
            throw new InvalidOperationException($"{TensorNames.Describe(Name)} holds {Scheme.Type}, not Int4.");
        }

        sbyte[] values = new sbyte[ElementCount];
        QuantizationPrimitives.UnpackInt4(_data, values);
        return values;
    }

    /// <summary>Gets the data as uint4 values, one per element (unpacked from <see cref="Data"/>).</summary>
    /// <returns>A new array of the values, each in [0, 15].</returns>
    /// <exception cref="InvalidOperationException">The scheme's type is not <see cref="QuantizedType.UInt4"/>.</exception>
    public byte[] GetUInt4Data()
    {
        if (Scheme.Type != QuantizedType.UInt4)
        {
            throw new InvalidOperationException($"{TensorNames.Describe(Name)} holds {Scheme.Type}, not UInt4.");
        }

        byte[] values = new byte[ElementCount];
        QuantizationPrimitives.UnpackUInt4(_data, values);
        return values;
    }

    /// <summary>Dequantizes into a new array.</summary>
    /// <returns>The real values, row-major.</returns>
    public float[] Dequantize()
    {
        float[] values = new float[ElementCount];
        Dequantize(values);
        return values;
    }

    /// <summary>Dequantizes into <paramref name="destination"/>: <c>(q - zeroPoint) * scale</c> per element.</summary>
    /// <param name="destination">Receives the real values; must have <see cref="ElementCount"/> elements.</param>
    /// <exception cref="ArgumentException">The destination has the wrong length.</exception>
    public void Dequantize(Span<float> destination)
    {
        QuantizationPrimitives.ValidateLengths(ElementCount, destination.Length, nameof(destination));
        if (Scheme.Type.GetBitWidth() == 8)
        {
            QuantizationPrimitives.DequantizeWithScales(_data, _layout, Parameters.Scales, Parameters.ZeroPoints, destination, Scheme.Type.IsSigned());
            return;
        }

        byte[] codes = ArrayPool<byte>.Shared.Rent(ElementCount);
        try
        {
            Span<byte> unpacked = codes.AsSpan(0, ElementCount);
            CopyCodesTo(unpacked);
            QuantizationPrimitives.DequantizeWithScales(unpacked, _layout, Parameters.Scales, Parameters.ZeroPoints, destination, Scheme.Type.IsSigned());
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(codes);
        }
    }

    /// <summary>Copies the codes one a byte (a signed code as its two's complement byte), unpacking 4-bit storage.</summary>
    internal void CopyCodesTo(Span<byte> destination)
    {
        if (Scheme.Type.GetBitWidth() == 8)
        {
            _data.CopyTo(destination);
        }
        else if (Scheme.Type.IsSigned())
        {
            QuantizationPrimitives.UnpackInt4(_data, MemoryMarshal.Cast<byte, sbyte>(destination));
        }
        else
        {
            QuantizationPrimitives.UnpackUInt4(_data, destination);
        }
    }

    /// <inheritdoc/>
    public override string ToString() =>
        FormattableString.Invariant($"{TensorNames.Describe(Name)} [{string.Join(", ", _shape)}] {Scheme.Type} {Scheme.Granularity} ({Scheme.Convention}, {Parameters})");

    /// <summary>The bytes that hold <paramref name="count"/> values of <paramref name="type"/>.</summary>
    private static int StoredLength(int count, QuantizedType type) =>
        type.GetBitWidth() == 4 ? QuantizationPrimitives.PackedInt4Length(count) : count;

    private static void ValidateParameters(in TensorLayout layout, QuantizationScheme scheme, QuantizationParameters parameters, string? name)
    {
        if (parameters.Count != layout.ParameterCount)
        {
            throw new ArgumentException(FormattableString.Invariant($"{TensorNames.Describe(name)} needs {layout.ParameterCount} parameter pairs for {scheme.Granularity}, not {parameters.Count}."), nameof(parameters));
        }

        ReadOnlySpan<int> zeroPoints = parameters.ZeroPoints;
        for (int i = 0; i < zeroPoints.Length; i++)
        {
            if (zeroPoints[i] < scheme.QuantMin || zeroPoints[i] > scheme.QuantMax)
            {
                throw new ArgumentException(FormattableString.Invariant($"{TensorNames.Describe(name)}: zero point {zeroPoints[i]} at index {i} is outside [{scheme.QuantMin}, {scheme.QuantMax}]."), nameof(parameters));
            }
        }
    }
}
