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
        Assert.Equal("PerGroup(groupSize: 2, axis: 1)", QuantizationGranularity.PerGroup(2, 1).ToString());
    }
}
