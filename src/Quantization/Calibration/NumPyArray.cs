using System.Buffers.Binary;
using System.Collections.ObjectModel;
using System.Globalization;
using System.Runtime.InteropServices;

namespace Quantization;

/// <summary>
/// An n-dimensional array of one <see cref="NpyDataType"/>, as NumPy's <c>.npy</c> and <c>.npz</c> files hold it:
/// the shape and the elements' bytes, little-endian, in C (row-major) order. Immutable.
/// </summary>
public sealed class NumPyArray
{
    private readonly byte[] _data;
    private readonly int[] _shape;

    /// <summary>Initializes a new instance of the <see cref="NumPyArray"/> class from a copy of raw bytes.</summary>
    /// <param name="dataType">The element type.</param>
    /// <param name="shape">The shape; empty for a scalar (one element), a zero dimension for an empty array.</param>
    /// <param name="data">The elements, little-endian, in C order: the product of the shape times the element size bytes.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dataType"/> is not defined, or a dimension is negative.</exception>
    /// <exception cref="ArgumentException">The shape is larger than an array can hold, <paramref name="data"/> has another length than the shape asks, or a <see cref="NpyDataType.Bool"/> byte is neither 0 nor 1.</exception>
    public NumPyArray(NpyDataType dataType, ReadOnlySpan<int> shape, ReadOnlySpan<byte> data)
        : this(dataType, shape.ToArray(), data.ToArray(), validate: true)
    {
    }

    /// <summary>Takes ownership of <paramref name="data"/> and <paramref name="shape"/>; the reader has checked them already when <paramref name="validate"/> is <see langword="false"/>.</summary>
    internal NumPyArray(NpyDataType dataType, int[] shape, byte[] data, bool validate)
    {
        if (validate)
        {
            if (!Enum.IsDefined(dataType))
            {
                throw new ArgumentOutOfRangeException(nameof(dataType), dataType, "Not a NumPy data type.");
            }

            foreach (int dim in shape)
            {
                ArgumentOutOfRangeException.ThrowIfNegative(dim, nameof(shape));
            }

            long count = CheckedLength(shape, ElementSizeOf(dataType)) ?? throw new ArgumentException($"The shape ({FormatShape(shape)}) is larger than an array can hold.", nameof(shape));
            if (data.Length != count * ElementSizeOf(dataType))
            {
                throw new ArgumentException(FormattableString.Invariant($"The shape ({FormatShape(shape)}) of {dataType} needs {count * ElementSizeOf(dataType)} bytes, not {data.Length}."), nameof(data));
            }

            int bad = FirstNonBoolean(dataType, data);
            if (bad >= 0)
            {
                throw new ArgumentException(FormattableString.Invariant($"Bool element {bad} is {data[bad]}, not 0 or 1."), nameof(data));
            }
        }

        DataType = dataType;
        _shape = shape;
        _data = data;
        Shape = new ReadOnlyCollection<int>(_shape);
    }

    /// <summary>Gets the element type.</summary>
    public NpyDataType DataType { get; }

    /// <summary>Gets the shape; empty for a scalar.</summary>
    public IReadOnlyList<int> Shape { get; }

    /// <summary>Gets the number of elements: the product of the shape (1 for a scalar).</summary>
    public int Length => _data.Length / ElementSize;

    /// <summary>Gets the size of one element in bytes.</summary>
    public int ElementSize => ElementSizeOf(DataType);

    /// <summary>Gets the elements' bytes, little-endian, in C order.</summary>
    public ReadOnlySpan<byte> Bytes => _data;

    /// <summary>Makes an array of a copy of <paramref name="values"/>.</summary>
    /// <typeparam name="T">
    /// <see cref="bool"/>, <see cref="sbyte"/>, <see cref="byte"/>, <see cref="short"/>, <see cref="ushort"/>, <see cref="int"/>,
    /// <see cref="uint"/>, <see cref="long"/>, <see cref="ulong"/>, <see cref="Half"/>, <see cref="float"/> or <see cref="double"/>.
    /// </typeparam>
    /// <param name="values">The elements in C order.</param>
    /// <param name="shape">The shape; empty for a scalar.</param>
    /// <returns>The array.</returns>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not one of the element types.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A dimension is negative.</exception>
    /// <exception cref="ArgumentException">The shape's product differs from the number of values.</exception>
    public static NumPyArray Create<T>(ReadOnlySpan<T> values, params ReadOnlySpan<int> shape)
        where T : unmanaged
    {
        return new NumPyArray(DataTypeOf<T>(), shape, MemoryMarshal.AsBytes(values));
    }

    /// <summary>Gets the <see cref="NpyDataType"/> of a .NET element type.</summary>
    /// <typeparam name="T">The element type.</typeparam>
    /// <returns>The data type.</returns>
    /// <exception cref="NotSupportedException"><typeparamref name="T"/> is not one of the types <see cref="NpyDataType"/> lists.</exception>
    public static NpyDataType DataTypeOf<T>()
        where T : unmanaged =>
        typeof(T) == typeof(bool) ? NpyDataType.Bool
        : typeof(T) == typeof(sbyte) ? NpyDataType.Int8
        : typeof(T) == typeof(byte) ? NpyDataType.UInt8
        : typeof(T) == typeof(short) ? NpyDataType.Int16
        : typeof(T) == typeof(ushort) ? NpyDataType.UInt16
        : typeof(T) == typeof(int) ? NpyDataType.Int32
        : typeof(T) == typeof(uint) ? NpyDataType.UInt32
        : typeof(T) == typeof(long) ? NpyDataType.Int64
        : typeof(T) == typeof(ulong) ? NpyDataType.UInt64
        : typeof(T) == typeof(Half) ? NpyDataType.Float16
        : typeof(T) == typeof(float) ? NpyDataType.Float32
        : typeof(T) == typeof(double) ? NpyDataType.Float64
        : throw new NotSupportedException($"{typeof(T).Name} is not a NumPy element type.");

    /// <summary>Gets the size in bytes of one element of a data type.</summary>
    /// <param name="dataType">The data type.</param>
    /// <returns>1, 2, 4 or 8.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="dataType"/> is not defined.</exception>
    public static int ElementSizeOf(NpyDataType dataType) => dataType switch
    {
        NpyDataType.Bool or NpyDataType.Int8 or NpyDataType.UInt8 => 1,
        NpyDataType.Int16 or NpyDataType.UInt16 or NpyDataType.Float16 => 2,
        NpyDataType.Int32 or NpyDataType.UInt32 or NpyDataType.Float32 => 4,
        NpyDataType.Int64 or NpyDataType.UInt64 or NpyDataType.Float64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dataType), dataType, "Not a NumPy data type."),
    };

    /// <summary>
    /// Tells whether <see cref="ConvertTo"/> converts from one data type to another. Exactly these conversions exist:
    /// a type to itself; an integer type to an integer type whose range contains it; an integer type to a float type
    /// that represents each of its values exactly (|value| at most 2^11 for float16, 2^24 for float32, 2^53 for
    /// float64); a float type to a float type, rounding to the nearest value (ties to even). Bool converts only to bool,
    /// and no float converts to an integer.
    /// </summary>
    /// <param name="from">The source type.</param>
    /// <param name="to">The target type.</param>
    /// <returns>Whether the conversion exists.</returns>
    public static bool CanConvert(NpyDataType from, NpyDataType to)
    {
        if (from == to)
        {
            return true;
        }

        if (from == NpyDataType.Bool || to == NpyDataType.Bool || !Enum.IsDefined(from) || !Enum.IsDefined(to))
        {
            return false;
        }

        if (IsFloat(from))
        {
            return IsFloat(to);
        }

        (double minimum, double maximum) = IntegerRange(from);
        if (IsFloat(to))
        {
            double exact = to switch { NpyDataType.Float16 => 1 << 11, NpyDataType.Float32 => 1 << 24, _ => 1L << 53 };
            return Math.Max(-minimum, maximum) <= exact;
        }

        (double targetMinimum, double targetMaximum) = IntegerRange(to);
        return targetMinimum <= minimum && maximum <= targetMaximum;
    }

    /// <summary>Converts the elements to another data type by the rules of <see cref="CanConvert"/>.</summary>
    /// <param name="dataType">The target type.</param>
    /// <returns>This array when the type is already <paramref name="dataType"/>, otherwise a new array of the same shape.</returns>
    /// <exception cref="ArgumentException"><see cref="CanConvert"/> is <see langword="false"/> for the two types.</exception>
    public NumPyArray ConvertTo(NpyDataType dataType)
    {
        if (dataType == DataType)
        {
            return this;
        }

        if (!CanConvert(DataType, dataType))
        {
            throw new ArgumentException($"{DataType} does not convert to {dataType} without loss.", nameof(dataType));
        }

        // Every conversion that is not the identity has a source of at most 32-bit integers or floats: exact in double.
        int size = ElementSizeOf(dataType);
        byte[] target = new byte[Length * size];
        for (int i = 0; i < Length; i++)
        {
            double value = ReadDouble(i);
            Span<byte> slot = target.AsSpan(i * size, size);
            switch (dataType)
            {
                case NpyDataType.Int8: slot[0] = (byte)(sbyte)value; break;
                case NpyDataType.UInt8: slot[0] = (byte)value; break;
                case NpyDataType.Int16: BinaryPrimitives.WriteInt16LittleEndian(slot, (short)value); break;
                case NpyDataType.UInt16: BinaryPrimitives.WriteUInt16LittleEndian(slot, (ushort)value); break;
                case NpyDataType.Int32: BinaryPrimitives.WriteInt32LittleEndian(slot, (int)value); break;
                case NpyDataType.UInt32: BinaryPrimitives.WriteUInt32LittleEndian(slot, (uint)value); break;
                case NpyDataType.Int64: BinaryPrimitives.WriteInt64LittleEndian(slot, (long)value); break;
                case NpyDataType.UInt64: BinaryPrimitives.WriteUInt64LittleEndian(slot, (ulong)value); break;
                case NpyDataType.Float16: BinaryPrimitives.WriteHalfLittleEndian(slot, (Half)value); break;
                case NpyDataType.Float32: BinaryPrimitives.WriteSingleLittleEndian(slot, (float)value); break;
                default: BinaryPrimitives.WriteDoubleLittleEndian(slot, value); break;
            }
        }

        return new NumPyArray(dataType, _shape, target, validate: false);
    }

    /// <summary>Gets the elements as a span of their .NET type.</summary>
    /// <typeparam name="T">The .NET type of <see cref="DataType"/> (see <see cref="NpyDataType"/>).</typeparam>
    /// <returns>The elements in C order.</returns>
    /// <exception cref="InvalidOperationException"><typeparamref name="T"/> is not the type of <see cref="DataType"/>.</exception>
    public ReadOnlySpan<T> AsSpan<T>()
        where T : unmanaged
    {
        NpyDataType type = DataTypeOf<T>();
        if (type != DataType)
        {
            throw new InvalidOperationException($"The array holds {DataType}, not {type} ({typeof(T).Name}).");
        }

        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("NumPyArray.AsSpan needs a little-endian machine; use ToSingleArray or Bytes.");
        }

        return MemoryMarshal.Cast<byte, T>(_data);
    }

    /// <summary>Copies the elements into a new array of their .NET type.</summary>
    /// <typeparam name="T">The .NET type of <see cref="DataType"/> (see <see cref="NpyDataType"/>).</typeparam>
    /// <returns>The elements in C order.</returns>
    /// <exception cref="InvalidOperationException"><typeparamref name="T"/> is not the type of <see cref="DataType"/>.</exception>
    public T[] ToArray<T>()
        where T : unmanaged => AsSpan<T>().ToArray();

    /// <summary>Converts the elements to float32, each rounded to the nearest float (ties to even); bool gives 0 or 1.</summary>
    /// <returns>The values in C order.</returns>
    public float[] ToSingleArray()
    {
        float[] values = new float[Length];
        int size = ElementSize;
        for (int i = 0; i < values.Length; i++)
        {
            ReadOnlySpan<byte> item = _data.AsSpan(i * size, size);
            values[i] = DataType switch
            {
                NpyDataType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(item),
                NpyDataType.UInt64 => BinaryPrimitives.ReadUInt64LittleEndian(item),
                _ => (float)ReadDouble(i),
            };
        }

        return values;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{DataType} ({FormatShape(_shape)})";

    /// <summary>The number of elements of a shape, or <see langword="null"/> when its bytes (zero dimensions aside) would not fit an array.</summary>
    internal static long? CheckedLength(ReadOnlySpan<int> shape, int elementSize)
    {
        // Zero dimensions included, the non-zero ones must fit an array: consumers size buffers by them.
        long count = 1, bound = elementSize;
        foreach (int dim in shape)
        {
            count *= dim;
            bound *= Math.Max(dim, 1);
            if (dim < 0 || bound > Array.MaxLength)
            {
                return null;
            }
        }

        return count;
    }

    /// <summary>The index of the first byte of a bool array that is neither 0 nor 1, or -1.</summary>
    internal static int FirstNonBoolean(NpyDataType dataType, ReadOnlySpan<byte> data) =>
        dataType == NpyDataType.Bool ? data.IndexOfAnyExcept((byte)0, (byte)1) : -1;

    internal static string FormatShape(ReadOnlySpan<int> shape)
    {
        string[] dims = new string[shape.Length];
        for (int i = 0; i < dims.Length; i++)
        {
            dims[i] = shape[i].ToString(CultureInfo.InvariantCulture);
        }

        return string.Join(", ", dims);
    }

    private static bool IsFloat(NpyDataType type) => type is NpyDataType.Float16 or NpyDataType.Float32 or NpyDataType.Float64;

    private static (double Minimum, double Maximum) IntegerRange(NpyDataType type) => type switch
    {
        NpyDataType.Int8 => (sbyte.MinValue, sbyte.MaxValue),
        NpyDataType.UInt8 => (0, byte.MaxValue),
        NpyDataType.Int16 => (short.MinValue, short.MaxValue),
        NpyDataType.UInt16 => (0, ushort.MaxValue),
        NpyDataType.Int32 => (int.MinValue, int.MaxValue),
        NpyDataType.UInt32 => (0, uint.MaxValue),
        NpyDataType.Int64 => (long.MinValue, long.MaxValue),
        _ => (0, ulong.MaxValue),
    };

    /// <summary>Element <paramref name="index"/> as a double: exact for every type but 64-bit integers, which round.</summary>
    private double ReadDouble(int index)
    {
        int size = ElementSize;
        ReadOnlySpan<byte> item = _data.AsSpan(index * size, size);
        return DataType switch
        {
            NpyDataType.Bool or NpyDataType.UInt8 => item[0],
            NpyDataType.Int8 => (sbyte)item[0],
            NpyDataType.Int16 => BinaryPrimitives.ReadInt16LittleEndian(item),
            NpyDataType.UInt16 => BinaryPrimitives.ReadUInt16LittleEndian(item),
            NpyDataType.Int32 => BinaryPrimitives.ReadInt32LittleEndian(item),
            NpyDataType.UInt32 => BinaryPrimitives.ReadUInt32LittleEndian(item),
            NpyDataType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(item),
            NpyDataType.UInt64 => BinaryPrimitives.ReadUInt64LittleEndian(item),
            NpyDataType.Float16 => (double)BinaryPrimitives.ReadHalfLittleEndian(item),
            NpyDataType.Float32 => BinaryPrimitives.ReadSingleLittleEndian(item),
            _ => BinaryPrimitives.ReadDoubleLittleEndian(item),
        };
    }
}
