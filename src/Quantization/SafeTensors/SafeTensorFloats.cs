using System.Runtime.InteropServices;

namespace Quantization;

/// <summary>Float32 values stored as a safetensors float type: rounded to nearest, ties to even, as PyTorch casts.</summary>
internal static class SafeTensorFloats
{
    /// <summary>Rounds a finite value to the nearest value of <paramref name="type"/> and back to float32.</summary>
    /// <param name="value">The value.</param>
    /// <param name="type">F16, BF16, F32 or F64 (the last two hold every float32 exactly).</param>
    /// <returns>The value as stored and read back.</returns>
    public static float Round(float value, SafeTensorDataType type) => type switch
    {
        SafeTensorDataType.Float16 => (float)(Half)value,
        SafeTensorDataType.BFloat16 => BitConverter.UInt32BitsToSingle((uint)ToBFloat16(value) << 16),
        SafeTensorDataType.Float32 or SafeTensorDataType.Float64 => value,
        _ => throw new NotSupportedException($"{type.HeaderName()} is not a float type (F16, BF16, F32, F64)."),
    };

    /// <summary>The little-endian bytes of values stored as <paramref name="type"/>.</summary>
    /// <param name="values">The values.</param>
    /// <param name="type">F16, BF16, F32 or F64.</param>
    /// <returns>The bytes.</returns>
    public static byte[] ToBytes(ReadOnlySpan<float> values, SafeTensorDataType type)
    {
        switch (type)
        {
            case SafeTensorDataType.Float16:
                Half[] halves = new Half[values.Length];
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, halves);
                return MemoryMarshal.AsBytes(halves.AsSpan()).ToArray();
            case SafeTensorDataType.BFloat16:
                ushort[] bfloats = new ushort[values.Length];
                for (int i = 0; i < values.Length; i++)
                {
                    bfloats[i] = ToBFloat16(values[i]);
                }

                return MemoryMarshal.AsBytes(bfloats.AsSpan()).ToArray();
            case SafeTensorDataType.Float64:
                double[] doubles = new double[values.Length];
                for (int i = 0; i < values.Length; i++)
                {
                    doubles[i] = values[i];
                }

                return MemoryMarshal.AsBytes(doubles.AsSpan()).ToArray();
            case SafeTensorDataType.Float32:
                return MemoryMarshal.AsBytes(values).ToArray();
            default:
                throw new NotSupportedException($"{type.HeaderName()} is not a float type (F16, BF16, F32, F64).");
        }
    }

    /// <summary>The bfloat16 bits of a finite float: its upper half, rounded to nearest, ties to even.</summary>
    private static ushort ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }
}
