// Calibrates a two-layer toy network with a data source and an observer written here, on the public API only.
using System.Globalization;

using Quantization.Samples;

foreach ((string name, string parameters) in await CustomCalibration.RunAsync(batches: 200))
{
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name,-8} {parameters}"));
}
