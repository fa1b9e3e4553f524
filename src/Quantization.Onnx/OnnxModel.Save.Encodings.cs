using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

public sealed partial class OnnxModel
{
    /// <summary>Whether the type's values have a typed field this class can convert to raw bytes: every type up to the FLOAT8 formats but STRING.</summary>
    private static bool HasTypedEncoding(int dataType) =>
        dataType is >= (int)TensorProto.Types.DataType.Float and <= 20 && dataType != (int)TensorProto.Types.DataType.String;

    private static int Int32DataWidth(int dataType) => (TensorProto.Types.DataType)dataType switch
    {
        TensorProto.Types.DataType.Int32 => 4,
        TensorProto.Types.DataType.Int16 or TensorProto.Types.DataType.Uint16 or TensorProto.Types.DataType.Float16 or TensorProto.Types.DataType.Bfloat16 => 2,
        _ => 1,
    };

    /// <summary>Gets the bits of one element as raw data, or 0 for types whose raw size is not known here (STRING, UNDEFINED, future types).</summary>
    private static int ElementBits(int dataType) => dataType switch
    {
        1 or 6 or 12 => 32, // FLOAT, INT32, UINT32
        2 or 3 or 9 => 8, // UINT8, INT8, BOOL
        4 or 5 or 10 or 16 => 16, // UINT16, INT16, FLOAT16, BFLOAT16
        7 or 11 or 13 or 14 => 64, // INT64, DOUBLE, UINT64, COMPLEX64
        15 => 128, // COMPLEX128
        >= 17 and <= 20 or 24 => 8, // FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ, FLOAT8E8M0
        >= 21 and <= 23 => 4, // UINT4, INT4, FLOAT4E2M1: two per byte
        25 or 26 => 2, // UINT2, INT2: four per byte
        _ => 0,
    };

    /// <summary>Gets the bytes a tensor's values take as raw data, or <see langword="null"/> when its type's size is not known.</summary>
    private static long? RawLength(TensorProto tensor, string name)
    {
        int bits = ElementBits(tensor.DataType);
        if (bits == 0)
        {
            return null;
        }

        long count = CheckedElementCount(tensor, name);
        return count > long.MaxValue / bits ? throw new InvalidDataException($"Tensor '{name}' has shape [{string.Join(", ", tensor.Dims)}], more bytes than a file can hold.") : ((count * bits) + 7) / 8;
    }

    private static long CheckedElementCount(TensorProto tensor, string name)
    {
        long count = 1;
        foreach (long dim in tensor.Dims)
        {
            if (dim < 0)
            {
                throw new InvalidDataException(FormattableString.Invariant($"Tensor '{name}' has a negative dimension ({dim})."));
            }

            if (dim != 0 && count > long.MaxValue / dim)
            {
                throw new InvalidDataException($"Tensor '{name}' has shape [{string.Join(", ", tensor.Dims)}], more values than a file can hold.");
            }

            count *= dim;
        }

        return count;
    }
}
