using System.Globalization;

using Quantization.Samples;

namespace Quantization.Tests.Samples;

public class SamplesTests
{
    [Fact]
    public async Task CustomDataSourceSample_CalibratesWithAUserSourceAndObserver()
    {
        IReadOnlyList<(string Name, string Parameters)> result = await CustomCalibration.RunAsync(batches: 200);
        Assert.Equal(["input", "logits"], result.Select(r => r.Name));

        // The sample's percentile observer ignores the rare spikes of 50: the input range stays near [-1, 1].
        string input = result[0].Parameters;
        float scale = float.Parse(input.Split(' ')[1].TrimEnd(','), CultureInfo.InvariantCulture);
        Assert.InRange(scale, 1.5f / 255, 2.5f / 255);
    }
}
