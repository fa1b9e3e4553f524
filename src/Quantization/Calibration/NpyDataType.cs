namespace Quantization;

/// <summary>
/// The NumPy dtypes that <see cref="NumPyArray"/> holds, with NumPy's names. Each is stored little-endian, one element
/// after the other; the comment gives NumPy's type string (<c>descr</c>) for it and the .NET element type.
/// </summary>
public enum NpyDataType
{
    /// <summary>Boolean, one byte that is 0 or 1 (<c>|b1</c>, <see cref="bool"/>).</summary>
    Bool,

    /// <summary>Signed 8-bit integer (<c>|i1</c>, <see cref="sbyte"/>).</summary>
    Int8,

    /// <summary>Unsigned 8-bit integer (<c>|u1</c>, <see cref="byte"/>).</summary>
    UInt8,

    /// <summary>Signed 16-bit integer (<c>&lt;i2</c>, <see cref="short"/>).</summary>
    Int16,

    /// <summary>Unsigned 16-bit integer (<c>&lt;u2</c>, <see cref="ushort"/>).</summary>
    UInt16,

    /// <summary>Signed 32-bit integer (<c>&lt;i4</c>, <see cref="int"/>).</summary>
    Int32,

    /// <summary>Unsigned 32-bit integer (<c>&lt;u4</c>, <see cref="uint"/>).</summary>
    UInt32,

    /// <summary>Signed 64-bit integer (<c>&lt;i8</c>, <see cref="long"/>).</summary>
    Int64,

    /// <summary>Unsigned 64-bit integer (<c>&lt;u8</c>, <see cref="ulong"/>).</summary>
    UInt64,

    /// <summary>IEEE half precision (<c>&lt;f2</c>, <see cref="Half"/>).</summary>
    Float16,

    /// <summary>IEEE single precision (<c>&lt;f4</c>, <see cref="float"/>).</summary>
    Float32,

    /// <summary>IEEE double precision (<c>&lt;f8</c>, <see cref="double"/>).</summary>
    Float64,
}
