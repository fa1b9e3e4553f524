using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>Bias correction on the shapes of bias real models have, measured on inputs the calibration never saw.</summary>
public class BiasCorrectionTests
{
    [Fact]
    public async Task GroupedConv_AndAnExistingBiasAdd_AreCorrectedOnHeldOutData()
    {
        // image [1, 4, 6, 6] -> grouped Conv (2 groups, no bias) = c; x [2, 8] -> MatMul(w) -> Add(b) = m.
        ModelProto proto = Model(
            "grouped",
            [
                Node("Conv", "conv", ["image", "wc"], ["c"], Int("group", 2)),
                Node("MatMul", "matmul", ["x", "wm"], ["mm"]),
                Node("Add", "bias_add", ["mm", "b"], ["m"]),
            ],
            [Tensor("wc", Random(6 * 2 * 9, 1), 6, 2, 3, 3), Tensor("wm", Random(8 * 4, 2), 8, 4), Tensor("b", [0.1f, 0.2f, 0.3f, 0.4f], 4)],
            [Value("image", 1, 4, 6, 6), Value("x", 2, 8)],
            [Value("c", 1, 6, 4, 4), Value("m", 2, 4)]);
        OnnxModel nearest = OnnxModel.Parse(proto.ToByteArray()), corrected = OnnxModel.Parse(proto.ToByteArray());
        OnnxWeightQuantizer.Quantize(nearest);
        await OnnxWeightQuantizer.QuantizeAsync(corrected, CalibrationDataSource.FromGenerator(16, Sample));
        Assert.Single(corrected.Proto.Graph.Node, n => n.OpType == "Add"); // the existing bias Add took the shift
        Assert.DoesNotContain(corrected.Proto.Graph.Initializer, t => t.Name == "b");

        // Held out: samples 100.. were never calibrated on. Per output channel, the mean error must shrink.
        for (int output = 0; output < 2; output++)
        {
            double[] before = ChannelMeanError(proto, nearest, output), after = ChannelMeanError(proto, corrected, output);
            Assert.True(after.Select(Math.Abs).Sum() < before.Select(Math.Abs).Sum() / 5, $"output {output}: {after.Select(Math.Abs).Sum()} vs {before.Select(Math.Abs).Sum()}");
        }
    }

    [Theory]
    [InlineData("scalar C")]
    [InlineData("row C")]
    [InlineData("C from an input")]
    [InlineData("empty C slot")]
    public async Task GemmBiases_OfEveryForm_AreCorrectedOrLeftValid(string form)
    {
        string[] inputs = form == "empty C slot" ? ["x", "w", ""] : ["x", "w", "c"];
        List<TensorProto> initializers = [Tensor("w", Random(4 * 8, 3), 4, 8)];
        List<ValueInfoProto> graphInputs = [Value("x", 2, 8)];
        switch (form)
        {
            case "scalar C": initializers.Add(Tensor("c", [0.5f])); break;
            case "row C": initializers.Add(Tensor("c", [0.1f, 0.2f, 0.3f, 0.4f], 1, 4)); break;
            case "C from an input": graphInputs.Add(Value("c", 4)); break;
        }

        ModelProto proto = Model("gemm", [Node("Gemm", "gemm", inputs, ["y"], Int("transB", 1))], initializers, graphInputs, [Value("y", 2, 4)]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> data = CalibrationDataSource.FromGenerator(4, i => (IReadOnlyCollection<NamedOnnxValue>)
        [
            NamedOnnxValue.CreateFromTensor("x", new DenseTensor<float>(Random(16, i, 4).Select(v => v + 3).ToArray(), [2, 8])),
            .. form == "C from an input" ? [NamedOnnxValue.CreateFromTensor("c", new DenseTensor<float>(new float[4], [4]))] : Array.Empty<NamedOnnxValue>(),
        ]);
        Assert.Single(await OnnxWeightQuantizer.QuantizeAsync(model, data));
        using InferenceSession session = new(model.Proto.ToByteArray()); // valid for ONNX Runtime
        if (form == "row C")
        {
            Assert.Equal([1L, 4], model.Proto.Graph.Initializer.Single(t => t.Name.StartsWith('c')).Dims);
        }
    }

    [Fact]
    public async Task NothingToCalibrate_GivesAnEmptyReport()
    {
        ModelProto proto = Model("relu", [Node("Relu", "relu", ["x"], ["y"])], [], [Value("x", 2, 8)], [Value("y", 2, 8)]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        Assert.Empty(await OnnxWeightQuantizer.QuantizeAsync(model, CalibrationDataSource.FromBatches([Feed("x", new float[16], 2, 8)])));
        Assert.Equal(proto, model.Proto);
    }

    [Fact]
    public async Task ConvTranspose_IsNotTracked_SoImagesOfAnySizeCalibrate()
    {
        ModelProto proto = Model("deconv", [Node("ConvTranspose", "deconv", ["image", "w"], ["y"])], [Tensor("w", Random(3 * 2 * 9, 5), 3, 2, 3, 3)], [new ValueInfoProto { Name = "image", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = 1 } } }], [new ValueInfoProto { Name = "y" }]);
        OnnxModel model = OnnxModel.Parse(proto.ToByteArray());
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>> sizes = CalibrationDataSource.FromGenerator(2, i => Feed("image", Random(3 * (4 + i) * (4 + i), i), 1, 3, 4 + i, 4 + i));
        Assert.Single(await OnnxWeightQuantizer.QuantizeAsync(model, sizes));
    }

    private static IReadOnlyCollection<NamedOnnxValue> Sample(int i) =>
    [
        NamedOnnxValue.CreateFromTensor("image", new DenseTensor<float>(Random(4 * 36, 1000 + i, 2).Select(v => v + 2).ToArray(), [1, 4, 6, 6])),
        NamedOnnxValue.CreateFromTensor("x", new DenseTensor<float>(Random(16, 2000 + i, 2).Select(v => v + 3).ToArray(), [2, 8])),
    ];

    /// <summary>Mean of (quantized - float) per output channel (axis 1) over 16 held-out samples.</summary>
    private static double[] ChannelMeanError(ModelProto original, OnnxModel quantized, int output)
    {
        using InferenceSession reference = new(original.ToByteArray()), candidate = new(quantized.Proto.ToByteArray());
        double[] sums = [];
        for (int i = 100; i < 116; i++)
        {
            using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> expected = reference.Run(Sample(i)), actual = candidate.Run(Sample(i));
            Tensor<float> e = expected[output].AsTensor<float>(), a = actual[output].AsTensor<float>();
            int channels = e.Dimensions[1], inner = (int)(e.Length / e.Dimensions[0] / channels);
            sums = sums.Length == 0 ? new double[channels] : sums;
            float[] ev = [.. e], av = [.. a];
            for (int k = 0; k < ev.Length; k++)
            {
                sums[k / inner % channels] += av[k] - ev[k];
            }
        }

        return sums;
    }
}
