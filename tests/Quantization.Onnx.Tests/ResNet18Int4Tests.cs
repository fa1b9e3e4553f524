using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Samples;

using Xunit.Abstractions;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>ResNet-18 with int4 weights (A16W4): rounding to nearest against GPTQ on im2col Hessians, and uint4 with the range search, on the shipped photos.</summary>
public class ResNet18Int4Tests(ITestOutputHelper output)
{
    [Fact]
    public async Task ResNet18_Int4Weights_Gptq_KeepsTheFeatures()
    {
        // Two folds, as the W8A16 test: calibrate on three photos, compare the features of the other three, then the other way round.
        float[][] inputs = ResNet18.LoadInputs();
        int[][] folds = [[0, 1, 2], [3, 4, 5]];
        float[][] reference = Features(File.ReadAllBytes(ResNet18.ModelPath), GraphOptimizationLevel.ORT_ENABLE_BASIC, [0, 1, 2, 3, 4, 5]);
        int[] order = [3, 4, 5, 0, 1, 2];
        float[][] held = [.. order.Select(i => reference[i])];
        Dictionary<string, double> means = [];
        foreach ((string granularityLabel, QuantizationGranularity granularity) in new[] { ("per channel", QuantizationGranularity.PerChannel()), ("blocks of 32", QuantizationGranularity.PerGroup(32)) })
        {
            foreach (bool gptq in new[] { false, true })
            {
                string label = $"W4A16 {granularityLabel}, {(gptq ? "GPTQ (act-order, static groups)" : "rounding to nearest")}, bias-corrected";
                (means[$"{granularityLabel} {gptq} basic"], means[$"{granularityLabel} {gptq} all"]) = await Evaluate(
                    label, () => new() { Scheme = QuantizationScheme.Int4PerGroup(32).WithGranularity(granularity), Gptq = gptq ? new GptqOptions { ActivationOrder = true } : null });
            }
        }

        // Asymmetric uint4 in blocks of 32 with each block's range chosen by its own rounding error (data-free): the issue's bar.
        (means["search basic"], means["search all"]) = await Evaluate(
            "W4A16 uint4 blocks of 32, rounding to nearest with the range search, bias-corrected",
            () => new() { Scheme = QuantizationScheme.Int4PerGroup(32, symmetric: false), RangeSearch = new WeightRangeSearch() });

        Assert.True(means["search basic"] >= 0.99, $"uint4 blocks of 32 with the range search: mean cosine {means["search basic"]}");
        Assert.True(means["search all"] >= 0.99, $"uint4 blocks of 32 with the range search, default level: mean cosine {means["search all"]}");

        foreach (string granularity in new[] { "per channel", "blocks of 32" })
        {
            Assert.True(means[$"{granularity} True basic"] > means[$"{granularity} False basic"] + 0.03, $"{granularity}: GPTQ should beat rounding to nearest");
        }

        // The issue's bar is 0.99; three calibration photos give the 4608-wide Hessians of the last stage 147 patches each
        // (rank-deficient), and GPTQ reaches about 0.999 on the calibration photos but less on the held-out ones.
        Assert.True(means["blocks of 32 True basic"] >= 0.96, $"GPTQ int4 in blocks of 32: mean cosine {means["blocks of 32 True basic"]}");

        // Both folds quantized with fresh options; the mean held-out cosine at ORT's basic and default levels.
        async Task<(double Basic, double All)> Evaluate(string label, Func<OnnxWeightQuantizationOptions> createOptions)
        {
            List<float[]> basic = [], all = [];
            foreach ((int[] calibrate, int[] evaluate) in new[] { (folds[0], folds[1]), (folds[1], folds[0]) })
            {
                OnnxModel model = Prepare();
                await OnnxWeightQuantizer.QuantizeAsync(model, CalibrationDataSource.FromBatches(calibrate.Select(i => ResNet18.Feed(inputs[i]))), createOptions());
                byte[] bytes = model.Proto.ToByteArray();
                basic.AddRange(Features(bytes, GraphOptimizationLevel.ORT_ENABLE_BASIC, evaluate));
                all.AddRange(Features(bytes, GraphOptimizationLevel.ORT_ENABLE_ALL, evaluate));
            }

            return (Report($"{label}, basic level", [.. basic]).Average(), Report($"{label}, default level", [.. all]).Average());
        }

        static OnnxModel Prepare()
        {
            OnnxModel model = OnnxModel.Load(ResNet18.ModelPath);
            OnnxOpsetUpgrader.Upgrade(model, 21);
            OnnxPreprocessor.FoldBatchNormalization(model);
            return model;
        }

        float[][] Features(byte[] bytes, GraphOptimizationLevel level, int[] indices)
        {
            using SessionOptions options = new() { GraphOptimizationLevel = level, IntraOpNumThreads = 1 };
            using InferenceSession session = new(bytes, options);
            return ResNet18.Features(session, indices.Select(i => inputs[i]));
        }

        double[] Report(string label, float[][] features)
        {
            double[] cosines = [.. features.Select((f, i) => Cosine(held[i], f))];
            output.WriteLine(FormattableString.Invariant($"ResNet-18 {label}: cosine mean {cosines.Average():F6}, worst {cosines.Min():F6}"));
            return cosines;
        }
    }
}
