namespace Quantization;

/// <summary>The element types of the safetensors format, by their names in the header.</summary>
public enum SafeTensorDataType
{
    /// <summary>Boolean, one byte (<c>BOOL</c>).</summary>
    Bool,

    /// <summary>Unsigned 8-bit integer (<c>U8</c>).</summary>
    UInt8,

    /// <summary>Signed 8-bit integer (<c>I8</c>).</summary>
    Int8,

    /// <summary>8-bit float, 5 exponent bits (<c>F8_E5M2</c>).</summary>
    Float8E5M2,

    /// <summary>8-bit float, 4 exponent bits (<c>F8_E4M3</c>).</summary>
    Float8E4M3,

    /// <summary>Signed 16-bit integer (<c>I16</c>).</summary>
    Int16,

    /// <summary>Unsigned 16-bit integer (<c>U16</c>).</summary>
    UInt16,

    /// <summary>IEEE half precision (<c>F16</c>).</summary>
    Float16,

    /// <summary>bfloat16: the upper half of a float32 (<c>BF16</c>).</summary>
    BFloat16,

    /// <summary>Signed 32-bit integer (<c>I32</c>).</summary>
    Int32,

    /// <summary>Unsigned 32-bit integer (<c>U32</c>).</summary>
    UInt32,

    /// <summary>IEEE single precision (<c>F32</c>).</summary>
    Float32,

    /// <summary>IEEE double precision (<c>F64</c>).</summary>
    Float64,

    /// <summary>Signed 64-bit integer (<c>I64</c>).</summary>
    Int64,

    /// <summary>Unsigned 64-bit integer (<c>U64</c>).</summary>
    UInt64,
}
