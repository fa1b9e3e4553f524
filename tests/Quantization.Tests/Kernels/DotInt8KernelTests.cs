using CsCheck;

namespace Quantization.Tests.Kernels;

public class DotInt8KernelTests
{
    [Fact]
    public void DotInt8_EveryLengthAndOffset_EqualsScalarReferenceIncludingExtremes()
    {
        Random random = new(3);
        for (int length = 0; length <= 260; length++)
        {
            for (int offset = 0; offset < 4; offset++)
            {
                sbyte[] x = new sbyte[length + offset], y = new sbyte[length + offset];
                random.NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(x.AsSpan()));
                random.NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(y.AsSpan()));
                if (length > 1)
                {
                    x[offset] = y[offset] = sbyte.MinValue;
                    x[^1] = sbyte.MaxValue;
                    y[^1] = sbyte.MinValue;
                }

                int expected = TestUtilities.ScalarReference.DotInt8(x.AsSpan(offset), y.AsSpan(offset));
                Assert.Equal(expected, QuantizationPrimitives.DotInt8(x.AsSpan(offset), y.AsSpan(offset)));
            }
        }
    }

    [Fact]
    public void DotInt8_AllMinusOneTwentyEight_DoesNotSaturate()
    {
        sbyte[] x = Enumerable.Repeat(sbyte.MinValue, 4099).ToArray();
        Assert.Equal(128 * 128 * 4099, QuantizationPrimitives.DotInt8(x, x));
    }

    [Fact]
    public void DotInt8_RandomVectors_EqualsScalarReference() =>
        Gen.SByte.Array[0, 600].SelectMany(x => Gen.SByte.Array[x.Length].Select(y => (x, y))).Sample(pair =>
            Assert.Equal(TestUtilities.ScalarReference.DotInt8(pair.x, pair.y), QuantizationPrimitives.DotInt8(pair.x, pair.y)));

    [Fact]
    public void DotInt8_DifferentLengths_Throws() =>
        Assert.Throws<ArgumentException>("y", () => QuantizationPrimitives.DotInt8(new sbyte[3], new sbyte[4]));
}
