using System.Runtime.InteropServices;

using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Kernels;

public class Int4PackingKernelTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Pack_EveryLengthAndOffset_MatchesScalarReferenceAndUnpacksBack(bool signed)
    {
        Random random = new(41);
        for (int length = 0; length <= 260; length++)
        {
            for (int offset = 0; offset < 4; offset++)
            {
                byte[] values = new byte[length + offset];
                for (int i = 0; i < values.Length; i++)
                {
                    values[i] = signed ? (byte)(sbyte)random.Next(-8, 8) : (byte)random.Next(0, 16);
                }

                ReadOnlySpan<byte> source = values.AsSpan(offset);
                byte[] packed = new byte[((length + 1) / 2) + 1];
                Span<byte> destination = packed.AsSpan(1, (length + 1) / 2);
                byte[] unpacked = new byte[length + 3];
                Span<byte> back = unpacked.AsSpan(3, length);
                if (signed)
                {
                    QuantizationPrimitives.PackInt4(MemoryMarshal.Cast<byte, sbyte>(source), destination);
                    QuantizationPrimitives.UnpackInt4(destination, MemoryMarshal.Cast<byte, sbyte>(back));
                }
                else
                {
                    QuantizationPrimitives.PackUInt4(source, destination);
                    QuantizationPrimitives.UnpackUInt4(destination, back);
                }

                Assert.Equal(ReferencePack(source), destination.ToArray());
                Assert.Equal(source.ToArray(), back.ToArray());
            }
        }
    }

    [Fact]
    public void Unpack_ArbitraryBytes_MatchesScalarReferenceOnEveryLength()
    {
        Gen.Select(Gen.Byte.Array[0, 300], Gen.Bool).Sample(t =>
        {
            (byte[] packed, bool odd) = t;
            int count = Math.Max(0, (2 * packed.Length) - (odd && packed.Length > 0 ? 1 : 0));
            sbyte[] signed = new sbyte[count];
            byte[] unsigned = new byte[count];
            QuantizationPrimitives.UnpackInt4(packed, signed);
            QuantizationPrimitives.UnpackUInt4(packed, unsigned);
            for (int i = 0; i < count; i++)
            {
                int nibble = (packed[i / 2] >> (4 * (i % 2))) & 0x0F;
                Assert.Equal(nibble, unsigned[i]);
                Assert.Equal(nibble >= 8 ? nibble - 16 : nibble, signed[i]);
            }
        });
    }

    [Fact]
    public void Pack_OddCount_LeavesTheLastHighNibbleZero()
    {
        byte[] packed = [0xFF, 0xFF];
        QuantizationPrimitives.PackInt4([-1, 7, -8], packed);
        Assert.Equal([0x7F, 0x08], packed);
    }

    [Theory]
    [InlineData(true, 8)]
    [InlineData(true, -9)]
    [InlineData(false, 16)]
    [InlineData(false, 255)]
    public void Pack_ValueOutOfRange_ThrowsNamingItsIndex(bool signed, int bad)
    {
        foreach (int length in new[] { 1, 31, 64, 129, 257 })
        {
            int index = length * 2 / 3;
            byte[] values = new byte[length];
            values[index] = (byte)bad;
            byte[] packed = new byte[(length + 1) / 2];
            ArgumentException error = signed
                ? Assert.Throws<ArgumentException>(() => QuantizationPrimitives.PackInt4(MemoryMarshal.Cast<byte, sbyte>(values), packed))
                : Assert.Throws<ArgumentException>(() => QuantizationPrimitives.PackUInt4(values, packed));
            Assert.Contains(FormattableString.Invariant($"index {index}"), error.Message, StringComparison.Ordinal);
            Assert.Equal("values", error.ParamName);
        }
    }

    [Fact]
    public void PackAndUnpack_WrongPackedLength_Throw()
    {
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.PackInt4(new sbyte[5], new byte[2]));
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.PackUInt4(new byte[4], new byte[3]));
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.UnpackInt4(new byte[2], new sbyte[5]));
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.UnpackUInt4(new byte[1], new byte[3]));
        QuantizationPrimitives.PackInt4([], []);
        QuantizationPrimitives.UnpackUInt4([], []);
    }

    [Fact]
    public void QuantizedTensor_Int4Layouts_MatchTheScalarReferenceAndPackTheCodes()
    {
        Gen.Select(Generators.Layouts, Gen.Bool, Gen.UInt).Sample(t =>
        {
            ((int[] shape, QuantizationGranularity granularity), bool symmetric, uint seed) = t;
            QuantizationScheme scheme = QuantizationScheme.Int4PerGroup(1, symmetric).WithGranularity(granularity);
            float[] values = Floats.Array(shape.Aggregate(1, (a, b) => a * b), seed);
            QuantizedTensor tensor = QuantizedTensor.Quantize(values, shape, scheme, "w");
            (byte[] codes, float[] scales, int[] zeroPoints) = ScalarReference.QuantizeDynamic(values, shape, scheme);
            Assert.Equal(scales, tensor.Parameters.Scales.ToArray());
            Assert.Equal(zeroPoints, tensor.Parameters.ZeroPoints.ToArray());
            Assert.Equal(ReferencePack(codes), tensor.Data.ToArray());
            byte[] unpacked = symmetric ? MemoryMarshal.AsBytes(tensor.GetInt4Data().AsSpan()).ToArray() : tensor.GetUInt4Data();
            Assert.Equal(codes, unpacked);
            float[] restored = tensor.Dequantize();
            for (int i = 0; i < values.Length; i++)
            {
                int p = ScalarReference.ParameterIndex(shape, granularity, i);
                int q = symmetric ? (sbyte)codes[i] : codes[i];
                Assert.Equal(ScalarReference.Dequantize(q, scales[p], zeroPoints[p]), restored[i]);
            }
        });
    }

    private static byte[] ReferencePack(ReadOnlySpan<byte> values)
    {
        byte[] packed = new byte[(values.Length + 1) / 2];
        for (int i = 0; i < values.Length; i++)
        {
            packed[i / 2] |= (byte)((values[i] & 0x0F) << (4 * (i % 2)));
        }

        return packed;
    }
}
