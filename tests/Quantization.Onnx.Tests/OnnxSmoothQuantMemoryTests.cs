using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

[Collection(nameof(MemoryMeasurements))]
public class OnnxSmoothQuantMemoryTests
{
    private const int Tokens = 256, Width = 1024;

    [Fact]
    public async Task CalibrationAndSearchSample_DoNotGrowWithTheNumberOfBatches()
    {
        // Each batch is 256 tokens of 1024 channels (1 MiB): keeping the tokens would hold 450 MiB more after 500 batches
        // than after 50. The statistic is a minimum and maximum per channel, and the search keeps at most 512 tokens.
        ModelProto proto = Model(
            "wide",
            [Node("LayerNormalization", "ln", ["x", "gamma", "beta"], ["y"]), Node("MatMul", "fc", ["y", "w"], ["o"])],
            [Tensor("gamma", Random(Width, 1), Width), Tensor("beta", Random(Width, 2), Width), Tensor("w", Random(Width * 4, 3), Width, 4)],
            [Value("x", 1, Tokens, Width)],
            [Value("o", 1, Tokens, 4)],
            opset: 17);
        float[] sample = Random(Tokens * Width, 4, 3);
        MeasuringProgress progress = new(50, 500);
        OnnxSmoothQuantResult result = await OnnxSmoothQuant.SmoothAsync(
            OnnxModel.Parse(proto.ToByteArray()),
            CalibrationDataSource.FromGenerator(500, _ => Feed("x", sample, 1, Tokens, Width)),
            new OnnxSmoothQuantOptions { SearchAlpha = true },
            progress);

        Assert.Single(result.Groups);
        long grown = progress.Managed[500] - progress.Managed[50];
        Assert.True(grown < 1 << 20, $"managed heap grew by {grown} bytes between batch 50 and batch 500");
    }

    /// <summary>Measures the managed heap (after a full collection) when calibration reaches the given batches; synchronous, unlike <see cref="Progress{T}"/>.</summary>
    private sealed class MeasuringProgress(params int[] batches) : IProgress<CalibrationProgress>
    {
        public Dictionary<int, long> Managed { get; } = [];

        public void Report(CalibrationProgress value)
        {
            if (batches.Contains(value.Batches))
            {
                Managed[value.Batches] = GC.GetTotalMemory(forceFullCollection: true);
            }
        }
    }
}
