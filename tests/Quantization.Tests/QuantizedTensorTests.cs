namespace Quantization.Tests;

public class QuantizedTensorTests
{
    [Fact]
    public void PerChannelWeight_RoundTripErrorIsAtMostHalfAStepPerChannel()
    {
        Random random = new(5);
        int rows = 64, columns = 300;
        float[] weight = new float[rows * columns];
        for (int i = 0; i < weight.Length; i++)
        {
            weight[i] = (float)((random.NextDouble() - 0.5) * (1 + (i / columns)));
        }

        QuantizedTensor tensor = QuantizedTensor.Quantize(weight, [rows, columns], QuantizationScheme.Int8PerChannel(), "fc1.weight");
        float[] restored = tensor.Dequantize();
        Assert.Equal(rows, tensor.Parameters.Count);
        Assert.Equal(rows * columns + (5 * rows), tensor.SizeInBytes);
        for (int i = 0; i < weight.Length; i++)
        {
            float scale = tensor.Parameters.Scales[i / columns];
            Assert.True(Math.Abs(weight[i] - restored[i]) <= scale * 0.5001f, $"index {i}");
        }
    }

    [Fact]
    public void StaticQuantize_UsesGivenParametersAndSaturates()
    {
        QuantizationScheme scheme = QuantizationScheme.UInt8PerTensorAsymmetric();
        QuantizedTensor tensor = QuantizedTensor.Quantize([-1f, 0f, 1f, 1000f], [4], scheme, new QuantizationParameters(0.5f, 10), "act");
        Assert.Equal([8, 10, 12, 255], tensor.Data.ToArray());
        Assert.Equal([-1f, 0f, 1f, 122.5f], tensor.Dequantize());
        Assert.Contains("act", tensor.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Constructor_CopiesItsInputs()
    {
        byte[] data = [1, 2, 3, 4];
        int[] shape = [2, 2];
        QuantizedTensor tensor = new(data, shape, QuantizationScheme.Int8PerTensor(), new QuantizationParameters(0.5f));
        data[0] = 100;
        shape[0] = 4;
        Assert.Equal(1, tensor.Data[0]);
        Assert.Equal([2, 2], tensor.Shape.ToArray());
        Assert.Equal([0.5f, 1f, 1.5f, 2f], tensor.Dequantize());
    }

    [Fact]
    public void GranularityParameterShapes_FollowOnnxBlockedLayout()
    {
        int[] shape = [2, 6, 4];
        Assert.Equal([1], QuantizationGranularity.PerTensor.GetParameterShape(shape));
        Assert.Equal([6], QuantizationGranularity.PerChannel(1).GetParameterShape(shape));
        Assert.Equal([4], QuantizationGranularity.PerChannel(-1).GetParameterShape(shape));
        Assert.Equal([2, 3, 4], QuantizationGranularity.PerGroup(2, 1).GetParameterShape(shape));
        Assert.Equal([2, 6, 1], QuantizationGranularity.PerGroup(4).GetParameterShape(shape));
        Assert.Equal([2, 6], QuantizationGranularity.PerToken.GetParameterShape(shape));
        Assert.Equal([2, 2, 4], QuantizationGranularity.PerGroup(4, 1).GetParameterShape(shape));
        Assert.Equal([2, 1, 4], QuantizationGranularity.PerGroup(7, 1).GetParameterShape(shape));
        Assert.Equal("PerGroup(groupSize: 2, axis: 1)", QuantizationGranularity.PerGroup(2, 1).ToString());
    }

    [Fact]
    public void Int4PerGroup_PartialLastGroupAndOddCount_RoundTripWithinHalfAStep()
    {
        // 3 rows of 13 inputs in groups of 4: groups of 4, 4, 4 and 1; 39 values, so the last byte holds one.
        float[] weight = [.. Enumerable.Range(0, 39).Select(i => MathF.Sin(i * 0.7f) * (1 + (i % 13)))];
        QuantizedTensor tensor = QuantizedTensor.Quantize(weight, [3, 13], QuantizationScheme.Int4PerGroup(4), "w");
        Assert.Equal(20, tensor.Data.Length);
        Assert.Equal(39, tensor.ElementCount);
        Assert.Equal(12, tensor.Parameters.Count);
        Assert.Equal(20 + (5 * 12), tensor.SizeInBytes);
        Assert.Equal(0, tensor.Data[^1] >> 4);
        float[] restored = tensor.Dequantize();
        for (int i = 0; i < weight.Length; i++)
        {
            float scale = tensor.Parameters.Scales[((i / 13) * 4) + ((i % 13) / 4)];
            Assert.True(Math.Abs(weight[i] - restored[i]) <= scale * 1.0001f, $"index {i}");
        }

        // A lone value is its group's maximum: full-range symmetric int4 stores it as 7 of 7.5 steps (scale 2·|w| / 15).
        Assert.Equal((float)(2.0 * Math.Abs(weight[12]) / 15), tensor.Parameters.Scales[3]);
        Assert.Equal(weight[12] < 0 ? -8 : 7, tensor.GetInt4Data()[12]);
    }

    [Fact]
    public void Int4_ZeroRangeGroupAndNaN_AreDefined()
    {
        float[] values = [0f, 0f, 0f, 0f, 1f, -2f, 3f, -4f];
        QuantizedTensor tensor = QuantizedTensor.Quantize(values, [2, 4], QuantizationScheme.Int4PerGroup(4, symmetric: false));
        Assert.Equal(1f, tensor.Parameters.Scales[0]);
        Assert.Equal(0, tensor.Parameters.ZeroPoints[0]);
        Assert.Equal([0, 0, 0, 0], tensor.GetUInt4Data()[..4]);
        values[5] = float.NaN;
        NonFiniteValueException error = Assert.Throws<NonFiniteValueException>(() => QuantizedTensor.Quantize(values, [2, 4], QuantizationScheme.Int4PerGroup(4), "emb"));
        Assert.Equal(5L, error.Index);
    }

    [Fact]
    public void Int4Constructor_TakesPackedBytesAndIgnoresTheUnusedNibble()
    {
        QuantizationScheme scheme = new(QuantizedType.Int4, symmetric: true, QuantizationGranularity.PerTensor);
        QuantizedTensor tensor = new([0x8F, 0xF7], [3], scheme, new QuantizationParameters(0.5f));
        Assert.Equal([-1, -8, 7], tensor.GetInt4Data());
        Assert.Equal([-0.5f, -4f, 3.5f], tensor.Dequantize());
        Assert.Equal([0x8F, 0x07], tensor.Data.ToArray());
        Assert.Throws<ArgumentException>(() => new QuantizedTensor(new byte[3], [3], scheme, new QuantizationParameters(0.5f)));
        Assert.Throws<ArgumentException>(() => new QuantizedTensor(new byte[2], [3], QuantizationScheme.Int4PerGroup(2, symmetric: false), new QuantizationParameters([1f, 1f], [0, 16])));
    }
}
