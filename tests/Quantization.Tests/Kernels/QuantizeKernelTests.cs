using CsCheck;

using Quantization.Tests.TestUtilities;

namespace Quantization.Tests.Kernels;

public class QuantizeKernelTests
{
    public static TheoryData<string, QuantizedType> ConventionsAndTypes()
    {
        TheoryData<string, QuantizedType> data = [];
        foreach (NumericConvention convention in NumericConvention.All)
        {
            data.Add(convention.Name, QuantizedType.Int8);
            data.Add(convention.Name, QuantizedType.UInt8);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(ConventionsAndTypes))]
    public void Quantize_EveryLengthAndOffset_MatchesScalarReference(string conventionName, QuantizedType type)
    {
        NumericConvention convention = NumericConvention.Parse(conventionName);
        int zeroPoint = type == QuantizedType.Int8 ? -3 : 128;
        float scale = 1f;
        for (int length = 0; length <= 260; length++)
        {
            for (int offset = 0; offset < 4; offset++)
            {
                float[] values = Floats.Array(length + offset, (uint)((length * 4) + offset));
                ReadOnlySpan<float> source = values.AsSpan(offset);
                byte[] actual = new byte[length + 3];
                Span<byte> destination = actual.AsSpan(3 - offset % 4, length);
                Run(source, destination, scale, zeroPoint, type, convention);
                for (int i = 0; i < length; i++)
                {
                    int expected = ScalarReference.Quantize(source[i], scale, zeroPoint, type.GetMinValue(), type.GetMaxValue(), convention);
                    Assert.True(
                        ToInt(destination[i], type) == expected,
                        $"length {length}, offset {offset}, index {i}: x = {source[i]:R} gave {ToInt(destination[i], type)}, expected {expected}");
                }
            }
        }
    }

    [Fact]
    public void Quantize_MillionsOfValuesAcrossScales_MatchScalarReference()
    {
        // 4 conventions x 8 scales x 131,072 values = 4.2 M values, with ties and near-ties at every scale.
        float[] scales = [1f, 0.5f, 0.00214854861f, 0.1f, 3.7f, 1e-20f, 1e20f, 0.0078431377f];
        float[] values = Floats.Array(131_072, 7);
        sbyte[] actual = new sbyte[values.Length];
        foreach (NumericConvention convention in NumericConvention.All)
        {
            foreach (float scale in scales)
            {
                float[] scaled = values.Select(v => float.IsFinite(v * scale) ? v * scale : v).ToArray();
                QuantizationPrimitives.Quantize(scaled, actual, scale, -1, convention);
                for (int i = 0; i < scaled.Length; i++)
                {
                    int expected = ScalarReference.Quantize(scaled[i], scale, -1, -128, 127, convention);
                    Assert.True(actual[i] == expected, $"{convention}, scale {scale:R}, x = {scaled[i]:R}: {actual[i]} != {expected}");
                }
            }
        }
    }

    [Fact]
    public void QuantizeKernel_NaNAndInfinity_AreFlaggedAndClampDeterministically()
    {
        // The public API throws on non-finite data; the kernel underneath must still never make an undefined cast,
        // and must give the scalar reference's bytes (NaN -> lower bound, +Inf -> upper, -Inf -> lower) on every tier.
        Gen.Select(Gen.Int[0, 200], Floats.Any.Array[200], Gen.OneOf(NumericConvention.All.ToArray())).Sample(
            (length, values, convention) =>
            {
                ReadOnlySpan<float> source = values.AsSpan(0, length);
                byte[] actual = new byte[length];
                bool flagged = QuantizationPrimitives.QuantizeLanes(convention, source, actual, new UniformParameters(convention.GetQuantizeFactor(0.75f), 5), QuantizedType.Int8);
                // The kernel may raise a false alarm (a sum of huge finite values overflows) but never miss a NaN or infinity.
                Assert.True(flagged || source.ToArray().All(float.IsFinite));
                for (int i = 0; i < length; i++)
                {
                    Assert.Equal(ScalarReference.Quantize(source[i], 0.75f, 5, -128, 127, convention), (sbyte)actual[i]);
                }
            },
            iter: 2_000);
    }

    [Theory]
    [InlineData(17, 0)]
    [InlineData(100, 63)]
    [InlineData(300, 299)]
    public void Quantize_NonFiniteValue_ThrowsWithTensorNameAndFirstIndex(int length, int badIndex)
    {
        float[] values = Floats.Array(length, 3);
        values[badIndex] = float.NaN;
        if (badIndex + 1 < length)
        {
            values[badIndex + 1] = float.PositiveInfinity;
        }

        NonFiniteValueException error = Assert.Throws<NonFiniteValueException>(
            () => QuantizationPrimitives.Quantize(values, new sbyte[length], 0.5f, tensorName: "layer1.weight"));
        Assert.Equal(badIndex, error.Index);
        Assert.Equal("layer1.weight", error.TensorName);
        Assert.Contains("'layer1.weight'", error.Message, StringComparison.Ordinal);
        Assert.Contains(badIndex.ToString(System.Globalization.CultureInfo.InvariantCulture), error.Message, StringComparison.Ordinal);
        Assert.Equal("source", error.ParamName);
    }

    [Fact]
    public void Quantize_HugeFiniteValues_AreNotMistakenForInfinity()
    {
        // Four maximal floats overflow the kernel's cheap non-finite check; the exact scan must clear them.
        float[] values = Enumerable.Repeat(float.MaxValue, 300).Concat(Enumerable.Repeat(float.MinValue, 300)).ToArray();
        sbyte[] destination = new sbyte[values.Length];
        QuantizationPrimitives.Quantize(values, destination, 1e-3f);
        Assert.All(destination.AsSpan(0, 300).ToArray(), q => Assert.Equal(127, q));
        Assert.All(destination.AsSpan(300).ToArray(), q => Assert.Equal(-128, q));
        Assert.Equal((float.MinValue, float.MaxValue), QuantizationPrimitives.MinMax(values));
        QuantizedTensor tensor = QuantizedTensor.Quantize(values, [2, 300], QuantizationScheme.Int8PerChannel());
        float scale = (float)(2.0 * float.MaxValue / 254.0);
        Assert.Equal([scale, scale], tensor.Parameters.Scales.ToArray());
        Assert.Equal([127, -127], new[] { tensor.GetInt8Data()[0], tensor.GetInt8Data()[300] });
    }

    [Fact]
    public void Quantize_ZeroScale_IsRejectedWhenDividingAndMapsToZeroPointWhenMultiplying()
    {
        float[] values = [1f, -2f, 0f];
        Assert.Throws<ArgumentOutOfRangeException>(() => QuantizationPrimitives.Quantize(values, new sbyte[3], 0f));
        sbyte[] destination = new sbyte[3];
        QuantizationPrimitives.Quantize(values, destination, 0f, 4, NumericConvention.GgmlQ8_0);
        Assert.Equal([4, 4, 4], destination);
    }

    private static void Run(ReadOnlySpan<float> source, Span<byte> destination, float scale, int zeroPoint, QuantizedType type, NumericConvention convention)
    {
        if (type == QuantizedType.Int8)
        {
            QuantizationPrimitives.Quantize(source, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(destination), scale, (sbyte)zeroPoint, convention);
        }
        else
        {
            QuantizationPrimitives.Quantize(source, destination, scale, (byte)zeroPoint, convention);
        }
    }

    private static int ToInt(byte value, QuantizedType type) => type == QuantizedType.Int8 ? (sbyte)value : value;
}
