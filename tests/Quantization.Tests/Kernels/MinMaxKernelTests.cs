using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Kernels;

public class MinMaxKernelTests
{
    [Fact]
    public void MinMax_EveryLengthAndOffset_MatchesScalarReference()
    {
        for (int length = 1; length <= 260; length++)
        {
            for (int offset = 0; offset < 4; offset++)
            {
                float[] values = Floats.Array(length + offset, (uint)((length * 7) + offset));
                ReadOnlySpan<float> x = values.AsSpan(offset);
                (float min, float max) = QuantizationPrimitives.MinMax(x);
                (float expectedMin, float expectedMax) = ScalarReference.MinMax(x);
                Assert.Equal(BitConverter.SingleToInt32Bits(expectedMin), BitConverter.SingleToInt32Bits(min));
                Assert.Equal(BitConverter.SingleToInt32Bits(expectedMax), BitConverter.SingleToInt32Bits(max));
                Assert.Equal(Math.Max(-expectedMin, expectedMax), QuantizationPrimitives.MaxMagnitude(x));
            }
        }
    }

    [Fact]
    public void MinMax_ExtremeAtEveryPosition_IsFound()
    {
        // The extreme sits in the main loop, the overlapping last block and the scalar tail in turn.
        for (int length = 1; length <= 200; length++)
        {
            for (int position = 0; position < length; position++)
            {
                float[] values = new float[length];
                Array.Fill(values, 1f);
                values[length - 1 - position] = 9f;
                bool shared = length - 1 - position == position;
                if (!shared)
                {
                    values[position] = -5f;
                }

                (float min, float max) = QuantizationPrimitives.MinMax(values);
                Assert.Equal(shared ? (length == 1 ? 9f : 1f) : -5f, min);
                Assert.Equal(9f, max);
            }
        }
    }

    [Fact]
    public void MinMax_SignedZeros_ReportPositiveZero()
    {
        (float min, float max) = QuantizationPrimitives.MinMax([-0f, 0f, -0f, 0f, -0f, 0f, 0f, -0f, -0f, 0f, -0f, 0f, -0f, 0f, 0f, -0f, 0f]);
        Assert.Equal(0, BitConverter.SingleToInt32Bits(min));
        Assert.Equal(0, BitConverter.SingleToInt32Bits(max));
    }

    [Fact]
    public void MinMax_NonFinite_ThrowsWithFirstIndex()
    {
        Gen.Select(Gen.Int[1, 300], Gen.Int[0, 299], Gen.OneOf(float.NaN, float.PositiveInfinity, float.NegativeInfinity)).Sample(
            (length, position, bad) =>
            {
                position %= length;
                float[] values = Floats.Array(length, (uint)length);
                values[position] = bad;
                NonFiniteValueException error = Assert.Throws<NonFiniteValueException>(() => QuantizationPrimitives.MinMax(values, "acts"));
                Assert.Equal(position, error.Index);
                Assert.Equal(bad, error.Value);
                Assert.Equal("acts", error.TensorName);
            },
            iter: 500);
    }

    [Fact]
    public void IndexOfNonFinite_IsTheFirstNaNOrInfinity_WhereverItSits()
    {
        // The vector scan skips whole vectors and the scalar tail finds the index: one or two bad values anywhere, or none.
        Gen.Select(Gen.Int[0, 300], Gen.Int[0, 299], Gen.Int[0, 299], Gen.OneOf(float.NaN, float.PositiveInfinity, float.NegativeInfinity)).Sample(
            (length, first, second, bad) =>
            {
                float[] values = Floats.Array(length, (uint)length);
                int expected = -1;
                if (length > 0 && first % 3 != 0)
                {
                    values[first % length] = bad;
                    values[second % length] = float.NaN;
                    expected = Math.Min(first % length, second % length);
                }

                Assert.Equal(expected, QuantizationPrimitives.IndexOfNonFinite(values));
            },
            iter: 1000);
    }

    [Fact]
    public void MinMax_Empty_Throws()
    {
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.MinMax([]));
        Assert.Throws<ArgumentException>(() => QuantizationPrimitives.MaxMagnitude([]));
    }
}
